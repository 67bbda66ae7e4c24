//! Structured channel pruning: whole output channels removed from convolutions, with the
//! matching input channels of everything that reads them.
//!
//! Tensors whose channels must stay aligned (through activations, pools, resizes, residual
//! adds, depthwise convolutions) form one group; a group is pruned as a unit, its channels
//! ranked by the summed L2 norm of the filters that produce them. A group is left alone when
//! its channels reach anything that reorders or reinterprets them (Reshape, Transpose,
//! Split, a graph output, a per-channel constant), or when anything but a dense Conv
//! produces it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;
use tract_onnx::pb;

use crate::onnx::{Model, attr, f32_proto};
use crate::{Error, calib, data, optimize};

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Fraction of each prunable group's channels removed.
    pub ratio: f32,
    pub input_size: Option<[usize; 2]>,
    /// Images whose mean activations of removed channels are folded into the readers'
    /// biases, so that what the channels contributed on average is kept.
    pub calib: Option<PathBuf>,
    /// The preset that preprocesses those images (default: by file name).
    pub preset: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub groups: usize,
    pub groups_pruned: usize,
    pub channels_before: usize,
    pub channels_after: usize,
    pub weights_before: usize,
    pub weights_after: usize,
}

/// Ops that keep every channel where it is: unary element-wise, pools, resizes.
const CHANNEL_WISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Clip",
    "Tanh",
    "Elu",
    "Selu",
    "Softplus",
    "Identity",
    "Dropout",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Resize",
    "Upsample",
];

const BINARY: &[&str] = &["Add", "Mul", "Sub", "Div", "Max", "Min"];

struct Groups {
    parent: HashMap<String, String>,
}

impl Groups {
    fn find(&mut self, t: &str) -> String {
        let p = self.parent.get(t).cloned().unwrap_or_else(|| t.to_string());
        if p == t {
            self.parent.insert(t.into(), t.into());
            return p;
        }
        let r = self.find(&p);
        self.parent.insert(t.into(), r.clone());
        r
    }
    fn union(&mut self, a: &str, b: &str) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent.insert(ra, rb);
        }
    }
}

fn is_depthwise(n: &pb::NodeProto, wshape: &[usize]) -> bool {
    let g = attr::get_int(n, "group").unwrap_or(1) as usize;
    g > 1 && wshape.len() == 4 && wshape[1] == 1 && wshape[0] == g
}

/// Prunes `model` (optimised first, so BatchNorms are already in the convolutions).
pub fn prune(model: &Model, opts: &Options) -> Result<(Model, Report), Error> {
    let means = match &opts.calib {
        Some(dir) => {
            let mut m = model.clone();
            let opt = optimize::Options {
                input_size: opts.input_size,
            };
            let shape = optimize::optimize(&mut m, &opt)?.input_shape;
            let cfg = data::detector_config(&model.path, opts.preset.as_deref())?;
            let inputs = data::input_tensors(dir, &cfg.preprocess, shape)?;
            let readers: Vec<String> = m
                .graph()
                .node
                .iter()
                .filter(|n| n.op_type == "Conv")
                .map(|n| n.input[0].clone())
                .collect();
            calib::channel_means(&m, &readers, &inputs, shape, |_| {})?
        }
        None => HashMap::new(),
    };
    prune_with_means(model, opts, &means)
}

/// [`prune`] with the readers' input channel means given (by tensor name, after `optimize`).
pub fn prune_with_means(
    model: &Model,
    opts: &Options,
    means: &HashMap<String, Vec<f32>>,
) -> Result<(Model, Report), Error> {
    let mut m = model.clone();
    let shape = optimize::optimize(
        &mut m,
        &optimize::Options {
            input_size: opts.input_size,
        },
    )?
    .input_shape;
    let facts = m.facts(shape)?;
    let channels = |t: &str| facts.shape(t).filter(|s| s.len() == 4).map(|s| s[1]);
    let inits: HashSet<String> = m
        .graph()
        .initializer
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let mut groups = Groups {
        parent: HashMap::new(),
    };
    let mut frozen: HashSet<String> = HashSet::new();
    let mut freeze = |t: &str| {
        frozen.insert(t.to_string());
    };
    // Dense convolutions produce groups; their weights are the ones ranked.
    let mut producers: Vec<usize> = Vec::new();
    for (i, n) in m.graph().node.iter().enumerate() {
        let op = n.op_type.as_str();
        let ins: Vec<&str> = n
            .input
            .iter()
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        match op {
            "Conv" => {
                let Some((w, _)) = m.constant_f32(&n.input[1]) else {
                    freeze(&n.input[0]);
                    freeze(&n.output[0]);
                    continue;
                };
                let g = attr::get_int(n, "group").unwrap_or(1);
                if is_depthwise(n, &w) {
                    groups.union(&n.input[0], &n.output[0]);
                } else if g == 1 {
                    producers.push(i);
                } else {
                    freeze(&n.input[0]);
                    freeze(&n.output[0]);
                }
            }
            _ if CHANNEL_WISE.contains(&op) => {
                if op == "PRelu" && ins.len() > 1 && channels(ins[1]).is_some_and(|c| c > 1) {
                    freeze(&n.output[0]);
                }
                groups.union(&n.input[0], &n.output[0]);
            }
            _ if BINARY.contains(&op) => {
                for x in &ins {
                    match channels(x) {
                        // A per-channel constant would need pruning too: leave the group.
                        Some(c) if c > 1 && inits.contains(*x) => freeze(&n.output[0]),
                        Some(c) if c > 1 => groups.union(x, &n.output[0]),
                        _ => {}
                    }
                }
            }
            "Concat" if attr::get_int(n, "axis").is_some_and(|a| a == 1 || a == -3) => {}
            _ => {
                for t in ins
                    .iter()
                    .copied()
                    .chain(n.output.iter().map(|s| s.as_str()))
                {
                    if channels(t).is_some() {
                        freeze(t);
                    }
                }
            }
        }
    }
    for o in &m.graph().output {
        frozen.insert(o.name.clone());
    }
    for i in m.inputs() {
        frozen.insert(i.name.clone());
    }
    // Concatenations feeding only dense convolutions are index maps; any other reader
    // freezes what was concatenated.
    let consumers = m.consumers();
    let by_index = m.graph().node.clone();
    for n in &by_index {
        if n.op_type != "Concat" {
            continue;
        }
        let dense_readers = consumers.get(&n.output[0]).is_some_and(|cs| {
            cs.iter().all(|c| {
                let r = &by_index[*c];
                r.op_type == "Conv"
                    && r.input[0] == n.output[0]
                    && attr::get_int(r, "group").unwrap_or(1) == 1
            })
        });
        if !dense_readers || !attr::get_int(n, "axis").is_some_and(|a| a == 1 || a == -3) {
            for x in &n.input {
                frozen.insert(x.clone());
            }
        }
        frozen.insert(n.output[0].clone());
    }
    // A group's root → its dense producers; a group with any frozen member or any other
    // producer stays whole.
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    let tensors: Vec<String> = facts.0.keys().cloned().collect();
    for t in &tensors {
        if channels(t).is_some() && !inits.contains(t) {
            let r = groups.find(t);
            members.entry(r).or_default().push(t.clone());
        }
    }
    let producer_of: HashMap<String, usize> = m.producers();
    let mut keep: HashMap<String, Vec<usize>> = HashMap::new();
    let mut report = Report {
        groups: 0,
        groups_pruned: 0,
        channels_before: 0,
        channels_after: 0,
        weights_before: weight_count(&m),
        weights_after: 0,
    };
    for (root, ts) in &members {
        report.groups += 1;
        let c = channels(&ts[0]).unwrap_or(0);
        report.channels_before += c;
        let mut prods = Vec::new();
        let mut ok = !ts.iter().any(|t| frozen.contains(t));
        for t in ts {
            match producer_of.get(t).map(|i| &by_index[*i]) {
                Some(p) if producers.contains(&producer_of[t]) => prods.push(p.clone()),
                Some(p) if p.op_type == "Conv" || CHANNEL_WISE.contains(&p.op_type.as_str()) => {}
                Some(p) if BINARY.contains(&p.op_type.as_str()) => {}
                _ => ok = false,
            }
        }
        let n_keep = kept(c, opts.ratio);
        if !ok || prods.is_empty() || n_keep >= c {
            report.channels_after += c;
            continue;
        }
        let mut score = vec![0f32; c];
        for p in &prods {
            let (_, w) = m
                .constant_f32(&p.input[1])
                .expect("dense producers have constant weights");
            let per = w.len() / c;
            for (o, s) in score.iter_mut().enumerate() {
                *s += w[o * per..(o + 1) * per]
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt();
            }
        }
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|a, b| score[*b].total_cmp(&score[*a]));
        let mut k: Vec<usize> = order[..n_keep].to_vec();
        k.sort();
        keep.insert(root.clone(), k);
        report.groups_pruned += 1;
        report.channels_after += n_keep;
    }
    // Rewrite every weight touching a pruned group.
    let kept_of = |groups: &mut Groups, t: &str| keep.get(&groups.find(t)).cloned();
    let nodes = m.graph().node.clone();
    for n in &nodes {
        if n.op_type != "Conv" {
            continue;
        }
        let Some((wshape, w)) = m.constant_f32(&n.input[1]) else {
            continue;
        };
        let out_keep = kept_of(&mut groups, &n.output[0]);
        let depthwise = is_depthwise(n, &wshape);
        // Input channels: from the input's group, or through a concatenation.
        let in_keep = if depthwise {
            None
        } else {
            concat_keep(&nodes, &n.input[0], &mut groups, &keep, &channels)
                .or_else(|| kept_of(&mut groups, &n.input[0]))
        };
        if out_keep.is_none() && in_keep.is_none() {
            continue;
        }
        let (o, i, kh, kw) = (wshape[0], wshape[1], wshape[2], wshape[3]);
        let rows: Vec<usize> = out_keep.clone().unwrap_or_else(|| (0..o).collect());
        let cols: Vec<usize> = in_keep.unwrap_or_else(|| (0..i).collect());
        let k = kh * kw;
        let mut nw = Vec::with_capacity(rows.len() * cols.len() * k);
        for &r in &rows {
            for &cc in &cols {
                let at = (r * i + cc) * k;
                nw.extend_from_slice(&w[at..at + k]);
            }
        }
        // What the removed input channels added on average moves into the bias.
        let mut shift = vec![0f32; o];
        if let Some(mean) = means.get(&n.input[0]).filter(|_| !depthwise) {
            let kept: HashSet<usize> = cols.iter().copied().collect();
            for (oo, s) in shift.iter_mut().enumerate() {
                for c in (0..i).filter(|c| !kept.contains(c)) {
                    let at = (oo * i + c) * k;
                    *s += w[at..at + k].iter().sum::<f32>() * mean.get(c).copied().unwrap_or(0.0);
                }
            }
        }
        let wname = m.fresh_name(&format!("{}.pruned_w", n.output[0]));
        m.set_initializer(f32_proto(&wname, &[rows.len(), cols.len(), kh, kw], &nw));
        let idx = node_index(&m, &n.output[0]);
        m.graph_mut().node[idx].input[1] = wname;
        let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => Some(
                m.constant_f32(b)
                    .ok_or_else(|| m.graph_err(format!("{b}: bias not constant")))?
                    .1,
            ),
            None => shift.iter().any(|s| *s != 0.0).then(|| vec![0.0; o]),
        };
        if let Some(bv) = bias {
            let nb: Vec<f32> = rows.iter().map(|r| bv[*r] + shift[*r]).collect();
            let bname = m.fresh_name(&format!("{}.pruned_b", n.output[0]));
            m.set_initializer(f32_proto(&bname, &[nb.len()], &nb));
            let node = &mut m.graph_mut().node[idx];
            node.input.resize(3, String::new());
            node.input[2] = bname;
        }
        if depthwise {
            attr::set(
                &mut m.graph_mut().node[idx],
                attr::int("group", rows.len() as i64),
            );
        }
    }
    m.remove_dead();
    report.weights_after = weight_count(&m);
    Ok((m, report))
}

/// Channels kept of `c` when pruning `ratio`: a multiple of 8 where there are 16 or more, so
/// tract's kernels stay full.
fn kept(c: usize, ratio: f32) -> usize {
    let k = ((c as f32 * (1.0 - ratio)).round() as usize).max(1);
    if c >= 16 { k.div_ceil(8) * 8 } else { k }.min(c)
}

fn node_index(m: &Model, output: &str) -> usize {
    m.graph()
        .node
        .iter()
        .position(|n| n.output.first().is_some_and(|o| o == output))
        .expect("from this graph")
}

/// The kept input channels of a Concat output, or `None` when `t` is not a concatenation
/// or none of its parts is pruned.
fn concat_keep(
    nodes: &[pb::NodeProto],
    t: &str,
    groups: &mut Groups,
    keep: &HashMap<String, Vec<usize>>,
    channels: &dyn Fn(&str) -> Option<usize>,
) -> Option<Vec<usize>> {
    let cat = nodes
        .iter()
        .find(|n| n.op_type == "Concat" && n.output.first().is_some_and(|o| o == t))?;
    let mut out = Vec::new();
    let mut offset = 0;
    let mut any = false;
    for x in &cat.input {
        let c = channels(x)?;
        match keep.get(&groups.find(x)) {
            Some(k) => {
                any = true;
                out.extend(k.iter().map(|i| offset + i));
            }
            None => out.extend(offset..offset + c),
        }
        offset += c;
    }
    any.then_some(out)
}

fn weight_count(m: &Model) -> usize {
    m.graph()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .filter_map(|n| m.constant_f32(&n.input[1]).map(|(_, w)| w.len()))
        .sum()
}
