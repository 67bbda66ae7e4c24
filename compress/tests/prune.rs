//! `prune`: small graphs with a residual add, a depthwise convolution and a concatenation,
//! where the pruned channels must be exactly the ones dropped everywhere, and NanoDet.

use std::path::{Path, PathBuf};

use ocelli_compress::onnx::{Model, attr, f32_proto, float_unshaped, float_value, node};
use ocelli_compress::prune::{self, Options};
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

#[test]
fn removed_channels_leave_their_mean_in_the_bias() {
    // On a constant input every channel is constant, so its mean is all it ever contributes:
    // with the means folded into the reader's bias, pruning live channels changes nothing.
    let mut a = conv("a", "x", "wa", 1, 0);
    a.output[0] = "a".into();
    let model = Model::build(
        13,
        vec![
            a,
            node("Relu", "r", &["a"], &["r"]),
            conv("y", "r", "wh", 1, 0),
        ],
        vec![float_value("x", &[Some(1), Some(4), Some(8), Some(8)])],
        vec![float_unshaped("y")],
        vec![
            f32_proto("wa", &[16, 4, 1, 1], &ranked(16, 4, 1, &[])),
            f32_proto("wa_b", &[16], &[0.1; 16]),
            f32_proto("wh", &[3, 16, 1, 1], &ranked(3, 16, 1, &[])),
            f32_proto("wh_b", &[3], &[0.0; 3]),
        ],
    );
    let shape = [1, 4, 8, 8];
    let input = pattern_input(shape, 0.5, 0.5);
    let means = ocelli_compress::calib::channel_means(
        &model,
        &["r".into()],
        std::slice::from_ref(&input),
        shape,
        |_| {},
    )
    .unwrap();
    let opts = Options {
        ratio: 0.5,
        ..Default::default()
    };
    let (pruned, report) = prune::prune_with_means(&model, &opts, &means).unwrap();
    assert_eq!(report.groups_pruned, 1, "{report:?}");
    let a = measure::run(&model.plan(shape).unwrap(), &input).unwrap();
    let b = measure::run(&pruned.plan(shape).unwrap(), &input).unwrap();
    let err = measure::max_error(&a, &b).unwrap();
    assert!(err < 1e-4, "output moved by {err}");
    let (without, _) = prune::prune_with_means(&model, &opts, &Default::default()).unwrap();
    let c = measure::run(&without.plan(shape).unwrap(), &input).unwrap();
    assert!(
        measure::max_error(&a, &c).unwrap() > 1e-2,
        "the compensation did something"
    );
}
