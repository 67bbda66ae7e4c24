//! `prune`: small graphs with a residual add, a depthwise convolution and a concatenation,
//! where the pruned channels must be exactly the ones dropped everywhere, and NanoDet.

use std::path::{Path, PathBuf};

use ocelli_compress::onnx::{Model, attr, f32_proto, float_unshaped, float_value, node};
use ocelli_compress::prune::{self, Options, Refit};
use ocelli_compress::{measure, pattern_input};

fn cached(name: &str) -> PathBuf {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/cache")).join(name);
    assert!(
        p.exists(),
        "{} is missing: run `models/fetch.sh`",
        p.display()
    );
    p
}

/// Weights whose output channel `o` has norm growing with `o` (channel 0 weakest), except
/// that `dead` channels are all zero.
fn ranked(o: usize, i: usize, k: usize, dead: &[usize]) -> Vec<f32> {
    (0..o * i * k)
        .map(|j| {
            let ch = j / (i * k);
            if dead.contains(&ch) {
                0.0
            } else {
                (1.0 + ch as f32) * if j % 2 == 0 { 0.1 } else { -0.07 }
            }
        })
        .collect()
}

fn conv(name: &str, x: &str, w: &str, group: i64, pad: i64) -> tract_onnx::pb::NodeProto {
    let mut n = node("Conv", name, &[x, w, &format!("{w}_b")], &[name]);
    n.attribute.push(attr::int("group", group));
    n.attribute.push(attr::ints("pads", &[pad; 4]));
    n
}

/// x[1,4,8,8] → a(16) → relu ─┬→ dw(16) → b(16) ─→ add → cat(+x) → head(3)
///                            └───────────────────┘
fn residual_model(dead: &[usize]) -> Model {
    let mut cat = node("Concat", "cat", &["add", "x"], &["cat"]);
    cat.attribute.push(attr::int("axis", 1));
    let mut inits = vec![
        f32_proto("wa", &[16, 4, 1, 1], &ranked(16, 4, 1, dead)),
        f32_proto("wd", &[16, 1, 3, 3], &ranked(16, 1, 9, &[])),
        f32_proto("wb", &[16, 16, 1, 1], &ranked(16, 16, 1, dead)),
        f32_proto("wh", &[3, 20, 1, 1], &ranked(3, 20, 1, &[])),
    ];
    for (w, c) in [("wa", 16), ("wd", 16), ("wb", 16), ("wh", 3)] {
        inits.push(f32_proto(&format!("{w}_b"), &[c], &vec![0.0; c]));
    }
    Model::build(
        13,
        vec![
            conv("a", "x", "wa", 1, 0),
            node("Relu", "r", &["a"], &["r"]),
            conv("d", "r", "wd", 16, 1),
            conv("b", "d", "wb", 1, 0),
            node("Add", "add", &["b", "r"], &["add"]),
            cat,
            conv("y", "cat", "wh", 1, 0),
        ],
        vec![float_value("x", &[Some(1), Some(4), Some(8), Some(8)])],
        vec![float_unshaped("y")],
        inits,
    )
}

#[test]
fn dead_channels_go_and_nothing_else_changes() {
    // Channels whose producers are all zero contribute nothing: removing exactly those must
    // leave the output as it was, through the residual add, the depthwise conv and the concat.
    let dead = [0, 1, 2, 3, 4, 5, 6, 7];
    let model = residual_model(&dead);
    let (pruned, report) = prune::prune(
        &model,
        &Options {
            ratio: 0.5,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert_eq!(report.groups_pruned, 1, "{report:?}");
    assert_eq!(
        report.channels_before - report.channels_after,
        8,
        "{report:?}"
    );
    let shape = [1, 4, 8, 8];
    let input = pattern_input(shape, -1.0, 1.0);
    let a = measure::run(&model.plan(shape).unwrap(), &input).unwrap();
    let b = measure::run(&pruned.plan(shape).unwrap(), &input).unwrap();
    let err = measure::max_error(&a, &b).unwrap();
    assert!(
        err < 1e-5,
        "pruning dead channels changed the output by {err}"
    );
    let dw = pruned
        .graph()
        .node
        .iter()
        .find(|n| n.output[0] == "d")
        .unwrap();
    assert_eq!(
        attr::get_int(dw, "group"),
        Some(8),
        "depthwise group follows its channels"
    );
}

#[test]
fn live_channels_cost_accuracy() {
    // The same prune on a model whose channels all carry signal must change the output:
    // the check above is not passing by accident.
    let model = residual_model(&[]);
    let (pruned, _) = prune::prune(
        &model,
        &Options {
            ratio: 0.5,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    let shape = [1, 4, 8, 8];
    let input = pattern_input(shape, -1.0, 1.0);
    let a = measure::run(&model.plan(shape).unwrap(), &input).unwrap();
    let b = measure::run(&pruned.plan(shape).unwrap(), &input).unwrap();
    assert!(measure::max_error(&a, &b).unwrap() > 1e-3);
}

#[test]
fn nanodet_prunes_and_still_runs() {
    let model = Model::load(&cached("nanodet_m_320.onnx")).unwrap();
    let (pruned, r) = prune::prune(
        &model,
        &Options {
            ratio: 0.25,
            ..Default::default()
        },
        |_| {},
    )
    .unwrap();
    assert!(
        r.groups_pruned > 0 && r.weights_after < r.weights_before,
        "{r:?}"
    );
    let shape = [1, 3, 320, 320];
    let out = measure::run(
        &pruned.plan(shape).unwrap(),
        &pattern_input(shape, -2.0, 2.0),
    )
    .unwrap();
    let reference = measure::run(
        &model.plan(shape).unwrap(),
        &pattern_input(shape, -2.0, 2.0),
    )
    .unwrap();
    let shapes = |v: &[tract_onnx::prelude::Tensor]| {
        v.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>()
    };
    assert_eq!(
        shapes(&out),
        shapes(&reference),
        "outputs keep their shapes"
    );
}

/// x[1,4,8,8] → a(16, 1×1) → relu → y(3, 3×3, stride 2, pad 1): the reader that
/// reconstruction refits sees its input through a strided, padded window.
fn reader_model() -> Model {
    let mut y = conv("y", "r", "wy", 1, 1);
    y.attribute.push(attr::ints("strides", &[2, 2]));
    // Mixed signs, so that every kept channel's weights matter.
    let wy: Vec<f32> = (0..3 * 16 * 9)
        .map(|j| ((j * 7919 % 23) as f32 - 11.0) * 0.02)
        .collect();
    Model::build(
        13,
        vec![
            conv("a", "x", "wa", 1, 0),
            node("Relu", "r", &["a"], &["r"]),
            y,
        ],
        vec![float_value("x", &[Some(1), Some(4), Some(8), Some(8)])],
        vec![float_unshaped("y")],
        vec![
            f32_proto("wa", &[16, 4, 1, 1], &ranked(16, 4, 1, &[])),
            f32_proto("wa_b", &[16], &[0.1; 16]),
            f32_proto("wy", &[3, 16, 3, 3], &wy),
            f32_proto("wy_b", &[3], &[0.0; 3]),
        ],
    )
}

/// A reproducible input of `shape` spread over -1..1, different for each `seed`.
fn noise(shape: [usize; 4], seed: u32) -> tract_onnx::prelude::Tensor {
    let mut s = seed.wrapping_mul(0x9e37_79b9).wrapping_add(1);
    let data: Vec<f32> = (0..shape.iter().product())
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    tract_onnx::prelude::tract_ndarray::Array4::from_shape_vec(shape, data)
        .unwrap()
        .into()
}

/// The pruned model's output error against the original's on `probe`, with and without
/// refitting the reader on `calib`.
fn plain_and_refitted(
    calib: &[tract_onnx::prelude::Tensor],
    probe: &tract_onnx::prelude::Tensor,
) -> (f32, f32, prune::Report) {
    let model = reader_model();
    let shape = [1, 4, 8, 8];
    let reference = measure::run(&model.plan(shape).unwrap(), probe).unwrap();
    let mut errors = Vec::new();
    let mut last = None;
    for refit in [Refit::None, Refit::Readers] {
        let opts = Options {
            ratio: 0.5,
            refit,
            ..Default::default()
        };
        let (pruned, report) = prune::prune_with_inputs(&model, &opts, calib, |_| {}).unwrap();
        assert_eq!(report.groups_pruned, 1, "{report:?}");
        let out = measure::run(&pruned.plan(shape).unwrap(), probe).unwrap();
        errors.push(measure::max_error(&reference, &out).unwrap());
        last = Some(report);
    }
    (errors[0], errors[1], last.unwrap())
}

#[test]
fn reconstruction_beats_plain_removal() {
    // Refitted on twelve inputs, judged on another: the removed channels' share of the
    // reader's output must largely move into the kept weights.
    let shape = [1, 4, 8, 8];
    let calib: Vec<_> = (0..12).map(|s| noise(shape, s)).collect();
    let (plain, refitted, report) = plain_and_refitted(&calib, &noise(shape, 99));
    assert!(
        plain > 1e-2,
        "removing live channels must cost something: {plain}"
    );
    assert!(
        refitted < 0.5 * plain,
        "reconstruction: error {refitted} against {plain} without it"
    );
    let fit = &report.refit[0];
    assert!(fit.error_after < fit.error_before, "{fit:?}");
}

#[test]
fn reconstruction_is_exact_on_a_constant_input() {
    // On a constant input every channel is constant, so the kept ones can carry what the
    // removed ones contributed, zero padding included: only the pull towards the trained
    // weights keeps the fit from being exact.
    let shape = [1, 4, 8, 8];
    let input = pattern_input(shape, 0.5, 0.5);
    let (plain, refitted, _) = plain_and_refitted(std::slice::from_ref(&input), &input);
    assert!(plain > 1e-2, "{plain}");
    assert!(
        refitted < 0.05 * plain,
        "output moved by {refitted} ({plain} without reconstruction)"
    );
}
