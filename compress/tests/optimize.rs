//! `optimize` keeps outputs equal (within 1e-4) while rewriting: small graphs built here that
//! each exercise one rewrite, and YOLOv8n on the reference photos.

use std::path::{Path, PathBuf};

use ocelli_compress::onnx::{
    Model, ModelError, attr, f32_proto, float_unshaped, float_value, i64_proto, node,
};
use ocelli_compress::{compare_models, data, optimize, pattern_input};

const CACHE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/cache");

fn cached(name: &str) -> PathBuf {
    let p = Path::new(CACHE).join(name);
    assert!(
        p.exists(),
        "{} is missing: run `models/fetch.sh`",
        p.display()
    );
    p
}

/// Weights with some spread, reproducible.
fn weights(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// x [N,3,8,8] → Conv(3→8, 3×3, pad 1) → "conv"; the cases hang their op on "conv".
fn conv_stem(batch: Option<usize>, opset: i64, mut tail: Vec<tract_onnx::pb::NodeProto>) -> Model {
    let mut conv = node("Conv", "conv", &["x", "w", "b"], &["conv"]);
    conv.attribute.push(attr::ints("pads", &[1, 1, 1, 1]));
    let mut nodes = vec![conv];
    nodes.append(&mut tail);
    Model::build(
        opset,
        nodes,
        vec![float_value("x", &[batch, Some(3), Some(8), Some(8)])],
        vec![float_unshaped("y")],
        vec![
            f32_proto("w", &[8, 3, 3, 3], &weights(216, 1)),
            f32_proto("b", &[8], &weights(8, 2)),
        ],
    )
}

struct Case {
    name: &'static str,
    model: Model,
    /// Which rewrite must have fired, read from the report.
    fired: fn(&optimize::Report) -> usize,
}

fn cases() -> Vec<Case> {
    let softmax = |axis| {
        let mut s = node("Softmax", "sm", &["conv"], &["y"]);
        s.attribute.push(attr::int("axis", axis));
        s
    };
    let bn_inputs = ["conv", "scale", "beta", "mean", "var"];
    let mut bn_model = conv_stem(
        Some(1),
        13,
        vec![node("BatchNormalization", "bn", &bn_inputs, &["y"])],
    );
    for (name, seed, offset) in [
        ("scale", 3, 1.0),
        ("beta", 4, 0.0),
        ("mean", 5, 0.0),
        ("var", 6, 1.0),
    ] {
        let v: Vec<f32> = weights(8, seed).iter().map(|x| x + offset).collect();
        bn_model.set_initializer(f32_proto(name, &[8], &v));
    }
    // Shape → Gather → Concat → Reshape: a shape computation tract knows is constant.
    let mut gather = node("Gather", "g", &["shape", "zero"], &["n"]);
    gather.attribute.push(attr::int("axis", 0));
    let mut concat = node("Concat", "cat", &["n1", "rest"], &["target"]);
    concat.attribute.push(attr::int("axis", 0));
    let mut shape_model = conv_stem(
        Some(1),
        13,
        vec![
            node("Shape", "shape", &["conv"], &["shape"]),
            gather,
            node("Unsqueeze", "unsq", &["n", "axes0"], &["n1"]),
            concat,
            node("Reshape", "reshape", &["conv", "target"], &["y"]),
        ],
    );
    shape_model.set_initializer(i64_proto("zero", &[], &[0]));
    shape_model.set_initializer(i64_proto("axes0", &[1], &[0]));
    shape_model.set_initializer(i64_proto("rest", &[2], &[8, 64]));
    let maxpool = |kernel: i64, stride: i64, pad: i64, ceil: bool| {
        let mut p = node("MaxPool", "pool", &["conv"], &["y"]);
        p.attribute
            .push(attr::ints("kernel_shape", &[kernel, kernel]));
        p.attribute.push(attr::ints("strides", &[stride, stride]));
        p.attribute.push(attr::ints("pads", &[pad, pad, pad, pad]));
        if ceil {
            p.attribute.push(attr::int("ceil_mode", 1));
        }
        conv_stem(Some(1), 13, vec![p])
    };
    vec![
        Case {
            name: "maxpool 2×2 stride 2",
            model: maxpool(2, 2, 0, false),
            fired: |r| r.maxpools_separated,
        },
        Case {
            name: "maxpool 3×3 stride 2 pad 1, ceil mode",
            model: maxpool(3, 2, 1, true),
            fired: |r| r.maxpools_separated,
        },
        Case {
            name: "maxpool 13×13 pad 6 (SPP) on an 8×8 map",
            model: maxpool(13, 1, 6, false),
            fired: |r| r.maxpools_separated,
        },
        Case {
            name: "softmax over channels, opset 13",
            model: conv_stem(Some(1), 13, vec![softmax(1)]),
            fired: |r| r.softmaxes_rewritten,
        },
        Case {
            name: "softmax from axis 1 on, opset 11 (flattened semantics)",
            model: conv_stem(Some(1), 11, vec![softmax(1)]),
            fired: |r| r.softmaxes_rewritten,
        },
        Case {
            name: "softmax over height, opset 18 (axes as inputs)",
            model: conv_stem(Some(1), 18, vec![softmax(-2)]),
            fired: |r| r.softmaxes_rewritten,
        },
        Case {
            name: "conv + batchnorm",
            model: bn_model,
            fired: |r| r.batchnorms_folded,
        },
        Case {
            name: "shape arithmetic",
            model: shape_model,
            fired: |r| r.constants_folded,
        },
        Case {
            name: "symbolic batch in value_info",
            model: {
                let mut m = conv_stem(None, 13, vec![node("Relu", "relu", &["conv"], &["y"])]);
                m.graph_mut()
                    .value_info
                    .push(float_value("conv", &[None, Some(8), Some(8), Some(8)]));
                m
            },
            fired: |r| r.value_info_stripped,
        },
    ]
}

#[test]
fn each_rewrite_fires_and_keeps_outputs() {
    for case in cases() {
        let mut model = case.model.clone();
        let report = optimize::optimize(&mut model, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(
            (case.fired)(&report) > 0,
            "{}: rewrite did not fire: {report:?}",
            case.name
        );
        let ops: Vec<&str> = model
            .graph()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        for gone in ["Softmax", "BatchNormalization", "Shape"] {
            assert!(
                !ops.contains(&gone),
                "{}: {gone} left in {ops:?}",
                case.name
            );
        }
        // The original with a symbolic batch cannot run as is in tract: compare on batch 1.
        let mut reference = case.model.clone();
        optimize::fix_input(&mut reference, None).unwrap();
        optimize::strip_value_info(&mut reference);
        let shape = [1, 3, 8, 8];
        let inputs = [pattern_input(shape, -3.0, 3.0)];
        let error = compare_models(&reference, &model, shape, &inputs).unwrap();
        assert!(error <= 1e-4, "{}: outputs differ by {error}", case.name);
    }
}

#[test]
fn a_wrong_rewrite_is_caught_by_the_comparison() {
    // The check itself must be able to fail: a softmax over the wrong axis differs.
    let a = conv_stem(Some(1), 13, vec![node("Softmax", "sm", &["conv"], &["y"])]);
    let mut b = a.clone();
    attr::set(&mut b.graph_mut().node[1], attr::int("axis", 1));
    let shape = [1, 3, 8, 8];
    let error = compare_models(&a, &b, shape, &[pattern_input(shape, -3.0, 3.0)]).unwrap();
    assert!(error > 1e-2, "different softmaxes compare equal ({error})");
}

#[test]
fn yolov8n_outputs_unchanged_on_the_reference_photos() {
    let path = cached("arch/yolov8n_320.onnx");
    let original = Model::load(&path).unwrap();
    let mut model = original.clone();
    let report = optimize::optimize(&mut model, &Default::default()).unwrap();
    assert_eq!(report.softmaxes_rewritten, 1, "{report:?}");
    assert_eq!(
        report.maxpools_separated, 3,
        "SPPF's three 5×5 pools: {report:?}"
    );
    let cfg = data::detector_config(&path, &Default::default()).unwrap();
    let inputs = data::input_tensors(
        &Path::new(CACHE).join("images"),
        &cfg.preprocess,
        report.input_shape,
    )
    .unwrap();
    let error = compare_models(&original, &model, report.input_shape, &inputs).unwrap();
    assert!(error <= 1e-4, "outputs differ by {error}");
}

#[test]
fn not_onnx_is_one_clear_error() {
    let path = cached("images/coffee.png");
    match Model::load(&path) {
        Err(e @ ModelError::NotOnnx { .. }) => assert!(e.to_string().contains("not an ONNX model")),
        other => panic!("expected NotOnnx, got {other:?}"),
    }
}
