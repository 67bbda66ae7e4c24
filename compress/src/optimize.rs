//! Graph rewrites that make tract fast without changing the outputs beyond float rounding.

use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::onnx::{Facts, Model, ModelError, attr, f32_proto, i64_proto, node, tensor_proto};

/// What `optimize` may change.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Input width and height to fix; `None` keeps the declared ones (which must be fixed).
    pub input_size: Option<[usize; 2]>,
}

/// What the rewrites did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub input_shape: [usize; 4],
    pub value_info_stripped: usize,
    pub batchnorms_folded: usize,
    pub constants_folded: usize,
    pub softmaxes_rewritten: usize,
    pub maxpools_separated: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
}

/// Folded constants larger than this many elements (and larger than what they replace) would
/// grow the file: leave those to tract, which folds them at load time anyway.
const MAX_FOLDED_ELEMENTS: usize = 1 << 16;

/// Runs every rewrite, in an order where each one sees the previous one's result.
pub fn optimize(model: &mut Model, opts: &Options) -> Result<Report, ModelError> {
    let mut report = Report {
        nodes_before: model.graph().node.len(),
        ..Default::default()
    };
    report.value_info_stripped = strip_value_info(model);
    report.input_shape = fix_input(model, opts.input_size)?;
    report.batchnorms_folded = fold_batchnorms(model)?;
    let facts = model.facts(report.input_shape)?;
    report.constants_folded = fold_constants(model, &facts)?;
    report.softmaxes_rewritten = rewrite_softmax(model, &facts)?;
    report.maxpools_separated = separate_maxpools(model);
    model.remove_dead();
    report.nodes_after = model.graph().node.len();
    Ok(report)
}

/// value_info is only a hint, and symbolic dims in it (or on outputs) clash with a fixed input.
pub fn strip_value_info(model: &mut Model) -> usize {
    let g = model.graph_mut();
    let n = g.value_info.len();
    g.value_info.clear();
    for o in &mut g.output {
        if let Some(pb::type_proto::Value::TensorType(t)) =
            o.r#type.as_mut().and_then(|t| t.value.as_mut())
            && t.shape.as_ref().is_some_and(|s| {
                s.dim.iter().any(|d| {
                    !matches!(
                        d.value,
                        Some(pb::tensor_shape_proto::dimension::Value::DimValue(_))
                    )
                })
            })
        {
            t.shape = None;
        }
    }
    n
}

/// Declares the input as [1,3,H,W] so nothing downstream stays symbolic.
pub fn fix_input(model: &mut Model, size: Option<[usize; 2]>) -> Result<[usize; 4], ModelError> {
    let shape = model.input_shape(size)?;
    let name = model.inputs()[0].name.clone();
    let g = model.graph_mut();
    let input = g.input.iter_mut().find(|i| i.name == name).expect("exists");
    let dims = shape
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                *d as i64,
            )),
            ..Default::default()
        })
        .collect();
    input.r#type = Some(pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: pb::tensor_proto::DataType::Float as i32,
            shape: Some(pb::TensorShapeProto { dim: dims }),
        })),
        ..Default::default()
    });
    Ok(shape)
}

/// Conv → BatchNormalization becomes one Conv with scaled weights and a shifted bias.
pub fn fold_batchnorms(model: &mut Model) -> Result<usize, ModelError> {
    let mut folded = 0;
    loop {
        let producers = model.producers();
        let consumers = model.consumers();
        let g = model.graph();
        let found = g.node.iter().enumerate().find_map(|(bi, bn)| {
            if bn.op_type != "BatchNormalization" || bn.output.len() != 1 {
                return None;
            }
            let ci = *producers.get(&bn.input[0])?;
            let conv = &g.node[ci];
            let sole = consumers.get(&bn.input[0]).is_some_and(|c| c.len() == 1)
                && !model.is_graph_output(&bn.input[0]);
            (conv.op_type == "Conv" && sole).then_some((ci, bi))
        });
        let Some((ci, bi)) = found else { break };
        let (conv, bn) = (g.node[ci].clone(), g.node[bi].clone());
        let konst = |name: &str| {
            model
                .constant_f32(name)
                .ok_or_else(|| model.graph_err(format!("{}: {name} is not a constant", bn.name)))
        };
        let (wshape, mut w) = konst(&conv.input[1])?;
        let [scale, beta, mean, var] = [1, 2, 3, 4].map(|i| konst(&bn.input[i]).map(|c| c.1));
        let (scale, beta, mean, var) = (scale?, beta?, mean?, var?);
        let eps = attr::get_float(&bn, "epsilon").unwrap_or(1e-5);
        let outc = wshape[0];
        let mut bias = match conv.input.get(2).filter(|s| !s.is_empty()) {
            Some(b) => konst(b)?.1,
            None => vec![0.0; outc],
        };
        let per = w.len() / outc;
        for o in 0..outc {
            let s = scale[o] / (var[o] + eps).sqrt();
            w[o * per..(o + 1) * per].iter_mut().for_each(|x| *x *= s);
            bias[o] = (bias[o] - mean[o]) * s + beta[o];
        }
        let wname = model.fresh_name(&format!("{}.bn_weight", conv.name));
        let bname = model.fresh_name(&format!("{}.bn_bias", conv.name));
        model.set_initializer(f32_proto(&wname, &wshape, &w));
        model.set_initializer(f32_proto(&bname, &[outc], &bias));
        let g = model.graph_mut();
        let c = &mut g.node[ci];
        c.input.truncate(1);
        c.input.push(wname);
        c.input.push(bname);
        c.output[0] = bn.output[0].clone();
        g.node.remove(bi);
        folded += 1;
    }
    model.remove_dead();
    Ok(folded)
}

/// Nodes whose outputs tract's analysis knows as constants become initializers.
pub fn fold_constants(model: &mut Model, facts: &Facts) -> Result<usize, ModelError> {
    let mut folded = Vec::new();
    let mut replacements = Vec::new();
    for (i, n) in model.graph().node.iter().enumerate() {
        // Control flow carries subgraphs: leave it alone.
        if n.output.is_empty() || n.attribute.iter().any(|a| a.g.is_some()) {
            continue;
        }
        let values: Option<Vec<&Arc<Tensor>>> = n.output.iter().map(|o| facts.value(o)).collect();
        let Some(values) = values else { continue };
        let in_elems: usize = n
            .input
            .iter()
            .filter_map(|i| facts.value(i))
            .map(|t| t.len())
            .sum();
        let out_elems: usize = values.iter().map(|t| t.len()).sum();
        if out_elems > MAX_FOLDED_ELEMENTS && out_elems > in_elems {
            continue;
        }
        for (o, v) in n.output.iter().zip(values) {
            let v = if v.datum_type() == TDim::datum_type() {
                v.cast_to::<i64>()
                    .map_err(|e| model.tract_err(&e))?
                    .into_owned()
            } else {
                (**v).clone()
            };
            let proto = tensor_proto(o, &v).map_err(|e| model.tract_err(&e))?;
            replacements.push(proto);
        }
        folded.push(i);
    }
    let g = model.graph_mut();
    let mut i = 0;
    g.node.retain(|_| {
        i += 1;
        !folded.contains(&(i - 1))
    });
    let count = folded.len();
    for r in replacements {
        model.set_initializer(r);
    }
    model.remove_dead();
    Ok(count)
}

/// A Softmax over a non-last axis costs tract most of a YOLOv8 run; the same maths as
/// ReduceMax, Sub, Exp, ReduceSum, Div runs at the speed of its parts.
pub fn rewrite_softmax(model: &mut Model, facts: &Facts) -> Result<usize, ModelError> {
    let opset = model.opset();
    let mut count = 0;
    let mut i = 0;
    while i < model.graph().node.len() {
        let n = model.graph().node[i].clone();
        if n.op_type != "Softmax" || !n.domain.is_empty() {
            i += 1;
            continue;
        }
        let rank = facts
            .rank(&n.input[0])
            .ok_or_else(|| model.graph_err(format!("{}: input rank unknown", n.name)))?
            as i64;
        let axis = attr::get_int(&n, "axis").unwrap_or(if opset < 13 { 1 } else { -1 });
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis == rank - 1 {
            i += 1;
            continue;
        }
        // Before opset 13, Softmax normalises over every axis from `axis` on, flattened.
        let axes: Vec<i64> = if opset < 13 {
            (axis..rank).collect()
        } else {
            vec![axis]
        };
        let base = if n.name.is_empty() {
            n.output[0].clone()
        } else {
            n.name.clone()
        };
        let t = |s: &str| model.fresh_name(&format!("{base}.{s}"));
        let (max, sub, exp, sum) = (t("max"), t("sub"), t("exp"), t("sum"));
        let axes_name = t("axes");
        let reduce = |op: &str, input: &str, output: &str, axes_as_input: bool| {
            let mut r = if axes_as_input {
                node(op, output, &[input, &axes_name], &[output])
            } else {
                let mut r = node(op, output, &[input], &[output]);
                r.attribute.push(attr::ints("axes", &axes));
                r
            };
            r.attribute.push(attr::int("keepdims", 1));
            r
        };
        let nodes = vec![
            reduce("ReduceMax", &n.input[0], &max, opset >= 18),
            node("Sub", &sub, &[&n.input[0], &max], &[&sub]),
            node("Exp", &exp, &[&sub], &[&exp]),
            reduce("ReduceSum", &exp, &sum, opset >= 13),
            node("Div", &base, &[&exp, &sum], &[&n.output[0]]),
        ];
        if opset >= 13 {
            model.set_initializer(i64_proto(&axes_name, &[axes.len()], &axes));
        }
        let g = model.graph_mut();
        g.node.splice(i..=i, nodes);
        i += 5;
        count += 1;
    }
    Ok(count)
}

/// tract's MaxPool visits every tap of the window for every output; a max over a rectangle is
/// the max over its columns of the max over its rows, so a (kh×1) pool then a (1×kw) pool give
/// the same values with kh + kw taps instead of kh·kw, and tract runs each of them faster per
/// tap (2×2 stride 2: 2.6× faster; 13×13: 4.5×). Each axis keeps its own stride, padding,
/// dilation and ceil mode, which ONNX applies per axis.
pub fn separate_maxpools(model: &mut Model) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < model.graph().node.len() {
        let n = model.graph().node[i].clone();
        let kernel = attr::get_ints(&n, "kernel_shape").unwrap_or_default();
        let auto_pad = attr::get(&n, "auto_pad")
            .map(|a| a.s.as_slice())
            .unwrap_or(b"NOTSET");
        if n.op_type != "MaxPool"
            || !n.domain.is_empty()
            || n.output.len() != 1
            || kernel.len() != 2
            || kernel.contains(&1)
            || !matches!(auto_pad, b"NOTSET" | b"VALID")
        {
            i += 1;
            continue;
        }
        let strides = attr::get_ints(&n, "strides").unwrap_or_else(|| vec![1, 1]);
        let pads = attr::get_ints(&n, "pads").unwrap_or_else(|| vec![0; 4]);
        let dilations = attr::get_ints(&n, "dilations");
        let ceil_mode = attr::get_int(&n, "ceil_mode");
        let base = if n.name.is_empty() {
            n.output[0].clone()
        } else {
            n.name.clone()
        };
        let rows = model.fresh_name(&format!("{base}.rows"));
        // axis 0 pools over rows (height), axis 1 over columns (width).
        let pool = |axis: usize, name: &str, input: &str, output: &str| {
            let pick = |v: &[i64], other: i64| {
                if axis == 0 {
                    [v[0], other]
                } else {
                    [other, v[1]]
                }
            };
            let mut p = node("MaxPool", name, &[input], &[output]);
            p.attribute
                .push(attr::ints("kernel_shape", &pick(&kernel, 1)));
            p.attribute.push(attr::ints("strides", &pick(&strides, 1)));
            let (begin, end) = (pick(&pads[..2], 0), pick(&pads[2..], 0));
            p.attribute
                .push(attr::ints("pads", &[begin[0], begin[1], end[0], end[1]]));
            if let Some(d) = &dilations {
                p.attribute.push(attr::ints("dilations", &pick(d, 1)));
            }
            if let Some(c) = ceil_mode {
                p.attribute.push(attr::int("ceil_mode", c));
            }
            p
        };
        let nodes = vec![
            pool(0, &rows, &n.input[0], &rows),
            pool(1, &base, &rows, &n.output[0]),
        ];
        model.graph_mut().node.splice(i..=i, nodes);
        i += 2;
        count += 1;
    }
    count
}

/// tract runs a K×K convolution several times slower per multiply-add than a 1×1 one; the
/// same convolution as Pad, K² strided Slices, one Concat over channels and a 1×1 Conv over
/// K²·C channels runs at 1×1 speed. Dense convolutions only (group 1, no dilation).
pub fn explicit_im2col(model: &mut Model, facts: &Facts) -> Result<usize, ModelError> {
    let mut count = 0;
    let mut i = 0;
    while i < model.graph().node.len() {
        let n = model.graph().node[i].clone();
        let Some(plan) = im2col_plan(model, facts, &n) else {
            i += 1;
            continue;
        };
        let Im2colPlan {
            k,
            stride,
            pads,
            out_hw,
            wshape,
            weights,
        } = plan;
        let base = if n.name.is_empty() {
            n.output[0].clone()
        } else {
            n.name.clone()
        };
        let fresh = |m: &Model, s: &str| m.fresh_name(&format!("{base}.{s}"));
        let mut nodes = Vec::new();
        let mut x = n.input[0].clone();
        if pads.iter().any(|p| *p != 0) {
            let padded = fresh(model, "pad");
            let pads_name = fresh(model, "pads");
            let p = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]];
            model.set_initializer(i64_proto(&pads_name, &[8], &p));
            nodes.push(node("Pad", &padded, &[&x, &pads_name], &[&padded]));
            x = padded;
        }
        let axes = fresh(model, "axes");
        let steps = fresh(model, "steps");
        model.set_initializer(i64_proto(&axes, &[2], &[2, 3]));
        model.set_initializer(i64_proto(&steps, &[2], &[stride[0], stride[1]]));
        let mut taps = Vec::new();
        for dy in 0..k[0] {
            for dx in 0..k[1] {
                let tap = fresh(model, &format!("tap{dy}_{dx}"));
                let starts = fresh(model, &format!("starts{dy}_{dx}"));
                let ends = fresh(model, &format!("ends{dy}_{dx}"));
                model.set_initializer(i64_proto(&starts, &[2], &[dy, dx]));
                model.set_initializer(i64_proto(
                    &ends,
                    &[2],
                    &[
                        dy + (out_hw[0] - 1) * stride[0] + 1,
                        dx + (out_hw[1] - 1) * stride[1] + 1,
                    ],
                ));
                nodes.push(node(
                    "Slice",
                    &tap,
                    &[&x, &starts, &ends, &axes, &steps],
                    &[&tap],
                ));
                taps.push(tap);
            }
        }
        let cols = fresh(model, "cols");
        let mut cat = node(
            "Concat",
            &cols,
            &taps.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            &[&cols],
        );
        cat.attribute.push(attr::int("axis", 1));
        nodes.push(cat);
        // Weight [O, C, KH, KW] → [O, KH·KW·C, 1, 1], tap-major to match the concatenation.
        let (o, c, kh, kw) = (wshape[0], wshape[1], wshape[2], wshape[3]);
        let mut w2 = vec![0f32; weights.len()];
        for oo in 0..o {
            for cc in 0..c {
                for y in 0..kh {
                    for xx in 0..kw {
                        w2[oo * kh * kw * c + (y * kw + xx) * c + cc] =
                            weights[((oo * c + cc) * kh + y) * kw + xx];
                    }
                }
            }
        }
        let wname = fresh(model, "weight_1x1");
        model.set_initializer(f32_proto(&wname, &[o, kh * kw * c, 1, 1], &w2));
        let mut inputs = vec![cols.as_str(), wname.as_str()];
        if let Some(b) = n.input.get(2).filter(|b| !b.is_empty()) {
            inputs.push(b);
        }
        nodes.push(node("Conv", &base, &inputs, &[&n.output[0]]));
        let added = nodes.len();
        model.graph_mut().node.splice(i..=i, nodes);
        i += added;
        count += 1;
    }
    model.remove_dead();
    Ok(count)
}

struct Im2colPlan {
    k: [i64; 2],
    stride: [i64; 2],
    /// top, left, bottom, right
    pads: [i64; 4],
    out_hw: [i64; 2],
    wshape: Vec<usize>,
    weights: Vec<f32>,
}

fn im2col_plan(model: &Model, facts: &Facts, n: &pb::NodeProto) -> Option<Im2colPlan> {
    if n.op_type != "Conv" || !n.domain.is_empty() {
        return None;
    }
    if attr::get_int(n, "group").unwrap_or(1) != 1
        || attr::get_ints(n, "dilations").is_some_and(|d| d.iter().any(|v| *v != 1))
        || attr::get(n, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET")
    {
        return None;
    }
    let (wshape, weights) = model.constant_f32(&n.input[1])?;
    if wshape.len() != 4 || (wshape[2] == 1 && wshape[3] == 1) {
        return None;
    }
    let out = facts.shape(&n.output[0])?;
    let stride = attr::get_ints(n, "strides").unwrap_or(vec![1, 1]);
    let p = attr::get_ints(n, "pads").unwrap_or(vec![0; 4]);
    Some(Im2colPlan {
        k: [wshape[2] as i64, wshape[3] as i64],
        stride: [stride[0], stride[1]],
        pads: [p[0], p[1], p[2], p[3]],
        out_hw: [out[2] as i64, out[3] as i64],
        wshape,
        weights,
    })
}
