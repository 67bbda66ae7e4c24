//! Which int8 form of a convolution tract runs faster than float: one layer shape built in
//! each representation as a tiny ONNX model, all timed side by side.

use serde::Serialize;
use tract_onnx::pb;

use crate::measure::{self, median};
use crate::onnx::{
    Model, ModelError, attr, f32_proto, float_unshaped, float_value, i8_proto, i32_proto, node,
    u8_proto,
};

/// A convolution layer's shape.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ConvShape {
    pub channels: usize,
    pub kernel: usize,
    /// Input height and width.
    pub size: usize,
    /// Depthwise (one group per channel) or dense.
    pub depthwise: bool,
}

/// How a chain of convolutions is expressed in ONNX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Repr {
    /// Float Conv.
    Float,
    /// Float, K×K convolutions as Slices + Concat + 1×1 Conv ([`crate::optimize::explicit_im2col`]).
    FloatIm2col,
    /// QuantizeLinear/DequantizeLinear around float Convs with int8 weights (what common
    /// quantizers emit by default).
    Qdq,
    /// One QuantizeLinear in, QLinearConvs on u8 activations (i8 weights), one DequantizeLinear out.
    QLinearU8,
    /// The same on i8 activations, zero point at the range's bottom.
    QLinearI8,
    /// i8 activations with zero point 0 (symmetric): no zero-point corrections at all.
    QLinearI8Sym,
    /// ConvInteger (i8 × i8 → i32, no zero points) then float scale, bias and ReLU, which tract
    /// can fuse into its matmul; QuantizeLinear (i8, zero point 0) before each layer.
    ConvInteger,
    /// The same graph run with tract's own int8 ops, without
    /// [`ocelli::kernels::accelerate`]: the baseline the fast ops are measured against.
    ConvIntegerTractQ,
    /// The same with the quantisation spelt as Mul, Round, Clip, Cast (vectorised float ops
    /// in tract) instead of QuantizeLinear.
    ConvIntegerCast,
    /// Each QLinearConv wrapped in its own QuantizeLinear/DequantizeLinear (float between layers).
    QLinearGlued,
}

pub const REPRS: [Repr; 10] = [
    Repr::Float,
    Repr::FloatIm2col,
    Repr::Qdq,
    Repr::QLinearU8,
    Repr::QLinearI8,
    Repr::QLinearI8Sym,
    Repr::QLinearGlued,
    Repr::ConvInteger,
    Repr::ConvIntegerTractQ,
    Repr::ConvIntegerCast,
];

/// Typical layers of the reference detectors at 320×320.
pub const SHAPES: [ConvShape; 6] = [
    ConvShape {
        channels: 32,
        kernel: 3,
        size: 80,
        depthwise: false,
    },
    ConvShape {
        channels: 64,
        kernel: 3,
        size: 40,
        depthwise: false,
    },
    ConvShape {
        channels: 64,
        kernel: 1,
        size: 40,
        depthwise: false,
    },
    ConvShape {
        channels: 128,
        kernel: 3,
        size: 20,
        depthwise: false,
    },
    ConvShape {
        channels: 96,
        kernel: 3,
        size: 40,
        depthwise: true,
    },
    ConvShape {
        channels: 128,
        kernel: 1,
        size: 20,
        depthwise: false,
    },
];

/// Convolutions per chain: enough that the chain's ends (one quantize, one dequantize) weigh
/// little against the layers, as inside a fully int8 network.
pub const CHAIN: usize = 4;

/// `CHAIN` convolutions of `shape` (each followed by ReLU) in representation `repr`.
pub fn chain_model(shape: ConvShape, repr: Repr) -> Model {
    let c = shape.channels;
    let group = if shape.depthwise { c } else { 1 };
    let per = c / group * shape.kernel * shape.kernel;
    let pad = (shape.kernel / 2) as i64;
    let mut nodes = Vec::new();
    let mut inits = vec![];
    let conv_attrs = |n: &mut pb::NodeProto| {
        n.attribute.push(attr::ints("pads", &[pad; 4]));
        n.attribute.push(attr::int("group", group as i64));
    };
    let weights: Vec<f32> = (0..c * per)
        .map(|i| ((i * 7919 % 255) as f32 / 255.0 - 0.5) / (per as f32).sqrt())
        .collect();
    let wq: Vec<i8> = weights
        .iter()
        .map(|w| (w * 127.0 / 0.5).round().clamp(-127.0, 127.0) as i8)
        .collect();
    let wdims = [c, c / group, shape.kernel, shape.kernel];
    inits.push(f32_proto("w", &wdims, &weights));
    inits.push(i8_proto("wq", &wdims, &wq));
    inits.push(f32_proto("w_scale", &[c], &vec![0.5 / 127.0; c]));
    inits.push(i8_proto("w_zp", &[c], &vec![0; c]));
    inits.push(f32_proto("b", &[c], &vec![0.01; c]));
    inits.push(i32_proto("bq", &[c], &vec![1; c]));
    inits.push(f32_proto("a_scale", &[], &[0.02]));
    inits.push(u8_proto("a_zp_u8", &[], &[0]));
    inits.push(i8_proto("a_zp_i8", &[], &[-128]));
    inits.push(i8_proto("a_zp_sym", &[], &[0]));
    let zp = match repr {
        Repr::QLinearI8 => "a_zp_i8",
        Repr::QLinearI8Sym => "a_zp_sym",
        _ => "a_zp_u8",
    };
    let mut x = "x".to_string();
    let q = |i: &str, o: &str| node("QuantizeLinear", o, &[i, "a_scale", zp], &[o]);
    let dq = |i: &str, o: &str| node("DequantizeLinear", o, &[i, "a_scale", zp], &[o]);
    match repr {
        Repr::FloatIm2col => {
            let mut m = chain_model(shape, Repr::Float);
            let input = [1, c, shape.size, shape.size];
            let facts = m.facts(input).expect("probe models load");
            crate::optimize::explicit_im2col(&mut m, &facts).expect("probe models rewrite");
            return m;
        }
        Repr::Float | Repr::Qdq => {
            if repr == Repr::Qdq {
                let mut wdq = node(
                    "DequantizeLinear",
                    "wdq",
                    &["wq", "w_scale", "w_zp"],
                    &["wd"],
                );
                wdq.attribute.push(attr::int("axis", 0));
                nodes.push(wdq);
            }
            let w = if repr == Repr::Qdq { "wd" } else { "w" };
            for l in 0..CHAIN {
                if repr == Repr::Qdq {
                    nodes.push(q(&x, &format!("q{l}")));
                    nodes.push(dq(&format!("q{l}"), &format!("dq{l}")));
                    x = format!("dq{l}");
                }
                let mut n = node("Conv", &format!("c{l}"), &[&x, w, "b"], &[&format!("c{l}")]);
                conv_attrs(&mut n);
                nodes.push(n);
                nodes.push(node(
                    "Relu",
                    &format!("r{l}"),
                    &[&format!("c{l}")],
                    &[&format!("r{l}")],
                ));
                x = format!("r{l}");
            }
            if repr == Repr::Qdq {
                nodes.push(q(&x, "qo"));
                nodes.push(dq("qo", "y"));
            } else {
                nodes.last_mut().unwrap().output[0] = "y".into();
            }
        }
        Repr::ConvInteger | Repr::ConvIntegerTractQ | Repr::ConvIntegerCast => {}
        Repr::QLinearU8 | Repr::QLinearI8 | Repr::QLinearI8Sym | Repr::QLinearGlued => {
            let glued = repr == Repr::QLinearGlued;
            for l in 0..CHAIN {
                if glued || l == 0 {
                    nodes.push(q(&x, &format!("q{l}")));
                    x = format!("q{l}");
                }
                // ReLU is the output range's lower bound: with zero point at the range's
                // bottom, saturation does it.
                let ins = [
                    x.as_str(),
                    "a_scale",
                    zp,
                    "wq",
                    "w_scale",
                    "w_zp",
                    "a_scale",
                    zp,
                    "bq",
                ];
                let mut n = node("QLinearConv", &format!("c{l}"), &ins, &[&format!("c{l}")]);
                conv_attrs(&mut n);
                nodes.push(n);
                x = format!("c{l}");
                if glued || l == CHAIN - 1 {
                    let out = if l == CHAIN - 1 {
                        "y".to_string()
                    } else {
                        format!("f{l}")
                    };
                    nodes.push(dq(&x, &out));
                    x = out;
                }
            }
        }
    }
    if matches!(
        repr,
        Repr::ConvInteger | Repr::ConvIntegerTractQ | Repr::ConvIntegerCast
    ) {
        inits.push(f32_proto("inv_scale", &[], &[1.0 / 0.02]));
        inits.push(f32_proto("lo", &[], &[-127.0]));
        inits.push(f32_proto("hi", &[], &[127.0]));
        inits.push(f32_proto(
            "mul",
            &[1, c, 1, 1],
            &vec![0.02 * 0.5 / 127.0; c],
        ));
        inits.push(f32_proto("bias4", &[1, c, 1, 1], &vec![0.01; c]));
        for l in 0..CHAIN {
            let n = |s: &str| format!("{s}{l}");
            nodes.push(node(
                "QuantizeLinear",
                &n("q"),
                &[&x, "a_scale", "a_zp_sym"],
                &[&n("q")],
            ));
            let mut ci = node("ConvInteger", &n("c"), &[&n("q"), "wq"], &[&n("c")]);
            conv_attrs(&mut ci);
            nodes.push(ci);
            let mut cast = node("Cast", &n("f"), &[&n("c")], &[&n("f")]);
            cast.attribute.push(attr::int("to", 1));
            nodes.push(cast);
            nodes.push(node("Mul", &n("m"), &[&n("f"), "mul"], &[&n("m")]));
            nodes.push(node("Add", &n("a"), &[&n("m"), "bias4"], &[&n("a")]));
            nodes.push(node("Relu", &n("r"), &[&n("a")], &[&n("r")]));
            x = n("r");
        }
        nodes.last_mut().unwrap().output[0] = "y".into();
    }
    let mut m = Model::build(
        13,
        nodes,
        vec![float_value(
            "x",
            &[Some(1), Some(c), Some(shape.size), Some(shape.size)],
        )],
        vec![float_unshaped("y")],
        inits,
    );
    m.remove_dead();
    m
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeRow {
    pub shape: ConvShape,
    /// Milliseconds of the chain per representation, in [`REPRS`] order: the fastest run
    /// (other processes only ever add time) and the median.
    pub ms: Vec<(Repr, f64)>,
    pub median_ms: Vec<f64>,
}

/// Times every representation of every shape.
pub fn probe(
    shapes: &[ConvShape],
    rounds: usize,
    mut progress: impl FnMut(&str),
) -> Result<Vec<ProbeRow>, ModelError> {
    let mut rows = Vec::new();
    for shape in shapes {
        progress(&format!("probe: {shape:?}"));
        let input_shape = [1, shape.channels, shape.size, shape.size];
        let models: Vec<Model> = REPRS.iter().map(|r| chain_model(*shape, *r)).collect();
        let plans = models
            .iter()
            .zip(REPRS)
            .map(|(m, r)| m.plan_with(input_shape, r != Repr::ConvIntegerTractQ))
            .collect::<Result<Vec<_>, _>>()?;
        let input = crate::pattern_input(input_shape, -1.0, 1.0);
        let times = measure::time_interleaved(&plans.iter().collect::<Vec<_>>(), &input, 2, rounds)
            .map_err(|e| models[0].tract_err(&e))?;
        rows.push(ProbeRow {
            shape: *shape,
            ms: REPRS
                .iter()
                .zip(&times)
                .map(|(r, t)| (*r, measure::min(t)))
                .collect(),
            median_ms: times.iter().map(|t| median(t)).collect(),
        });
    }
    Ok(rows)
}
