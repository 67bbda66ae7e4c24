//! `equalize`: a convolution's output channels evened out for the depthwise convolution that
//! reads them, the float model unchanged, the int8 one closer to it.

use std::collections::HashMap;
use std::path::Path;

use ocelli::model::layers::{self, Calibration, Form, Layer, LayerTimes, apply};
use ocelli_compress::calib::{Method, calibrate, channel_absmax};
use ocelli_compress::equalize::equalize;
use ocelli_compress::onnx::{Model, attr, f32_proto, float_unshaped, float_value, node};
use ocelli_compress::quantize::{self, relative_l2};
use ocelli_compress::{measure, pattern_input};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

const SHAPE: [usize; 4] = [1, 4, 8, 8];
/// Each channel's gain through the first convolution; the depthwise one undoes it, so every
/// channel matters as much to the output. The last is below `MAX_GAIN`'s reach (1/4).
const GAINS: [f32; 4] = [1.0, 0.5, 0.3, 0.01];

/// x → 1×1 conv (channel c times GAINS[c]) → `between` → depthwise 3×3 (times 1/GAINS[c])
/// → z, and `y` (what the depthwise reads) also a graph output when `y_out`.
fn model(between: &str, y_out: bool) -> Model {
    let mut w = vec![0.0; 16];
    for (c, g) in GAINS.iter().enumerate() {
        w[c * 4 + c] = *g;
    }
    let bias: Vec<f32> = GAINS.iter().map(|g| 0.1 * g).collect();
    let taps: Vec<f32> = GAINS
        .iter()
        .flat_map(|g| (0..9).map(move |i| (0.05 + 0.1 * i as f32) / g))
        .collect();
    let mut a = node("Conv", "a", &["x", "w", "b"], &["a"]);
    a.attribute.push(attr::ints("kernel_shape", &[1, 1]));
    let mut dw = node("Conv", "dw", &["y", "taps"], &["z"]);
    dw.attribute.push(attr::ints("pads", &[1, 1, 1, 1]));
    dw.attribute.push(attr::int("group", 4));
    let mut nodes = vec![a];
    match between {
        "Relu+MaxPool" => {
            nodes.push(node("Relu", "r", &["a"], &["r"]));
            let mut p = node("MaxPool", "p", &["r"], &["y"]);
            p.attribute.push(attr::ints("kernel_shape", &[2, 2]));
            p.attribute.push(attr::ints("pads", &[0, 0, 1, 1]));
            p.attribute.push(attr::ints("strides", &[1, 1]));
            nodes.push(p);
        }
        op => nodes.push(node(op, "r", &["a"], &["y"])),
    }
    nodes.push(dw);
    let mut outputs = vec![float_unshaped("z")];
    if y_out {
        outputs.push(float_unshaped("y"));
    }
    Model::build(
        13,
        nodes,
        vec![float_value("x", &SHAPE.map(Some))],
        outputs,
        vec![
            f32_proto("w", &[4, 4, 1, 1], &w),
            f32_proto("b", &[4], &bias),
            f32_proto("taps", &[4, 1, 3, 3], &taps),
        ],
    )
}

/// Both convolutions int8 (ConvInteger), calibrated on `inputs` with `Minmax`.
fn int8(m: &Model, inputs: &[tract_onnx::prelude::Tensor]) -> Model {
    let observed = ["x".to_string(), "y".to_string()];
    let cal = Calibration {
        thresholds: calibrate(m, &observed, inputs, SHAPE, Method::Minmax, |_| {}).unwrap(),
        means: HashMap::new(),
    };
    let layer = |out: &str, input: &str, w: Vec<usize>| {
        Layer::new(out, input, w, SHAPE.to_vec(), Form::ConvInteger)
    };
    let layers = [
        layer("a", "x", vec![4, 4, 1, 1]),
        layer("z", "y", vec![4, 1, 3, 3]),
    ];
    apply(m, &layers, &cal).unwrap()
}

/// Through ReLU, and ReLU then max pooling: the depthwise layer's input channels span one
/// range but the one amplified the most it may be; the float outputs stay as they were and
/// the int8 model's error shrinks. Through LeakyReLU, and where the tensor the depthwise
/// layer reads is also a graph output, nothing changes.
#[test]
fn evens_out_what_a_depthwise_layer_reads() {
    let inputs = [
        pattern_input(SHAPE, -1.0, 1.0),
        pattern_input(SHAPE, -0.5, 2.0),
    ];
    for (between, y_out, evened) in [
        ("Relu", false, true),
        ("Relu+MaxPool", false, true),
        ("LeakyRelu", false, false),
        ("Relu", true, false),
    ] {
        let float = model(between, y_out);
        let mut eq = float.clone();
        let n = equalize(&mut eq, &inputs, SHAPE, |_| {}).unwrap();
        assert_eq!(n, usize::from(evened), "{between}, y an output: {y_out}");
        let plan = |m: &Model| m.plan(SHAPE).unwrap();
        for input in &inputs {
            let (a, b) = (
                measure::run(&plan(&float), input).unwrap(),
                measure::run(&plan(&eq), input).unwrap(),
            );
            let err = relative_l2(&a[..1], &b[..1]).unwrap();
            assert!(err < 1e-6, "{between}: float outputs moved by {err}");
        }
        let ranges = |m: &Model| channel_absmax(m, &["y".into()], &inputs, SHAPE, |_| {}).unwrap();
        let (before, after) = (&ranges(&float)["y"], &ranges(&eq)["y"]);
        if !evened {
            assert_eq!(before, after, "{between}, y an output: {y_out}");
            continue;
        }
        let widest = after[0];
        for (c, r) in after[..3].iter().enumerate() {
            let r = r / widest;
            assert!(
                (r - 1.0).abs() < 1e-4,
                "{between}: channel {c} at {r} of the widest"
            );
        }
        let gain = (after[3] / before[3]) / (after[0] / before[0]);
        assert!(
            (gain - 4.0).abs() < 1e-3,
            "{between}: the quietest amplified {gain}×"
        );
        let error = |m: &Model| {
            let (f, q) = (plan(&float), plan(&int8(m, &inputs)));
            inputs
                .iter()
                .map(|i| {
                    let (a, b) = (measure::run(&f, i).unwrap(), measure::run(&q, i).unwrap());
                    relative_l2(&a[..1], &b[..1]).unwrap()
                })
                .sum::<f64>()
        };
        let (was, is) = (error(&float), error(&eq));
        assert!(is < 0.5 * was, "{between}: int8 error {was:.4} → {is:.4}");
    }
}

/// `quantize` evens out YuNet's 23 convolution → ReLU → depthwise chains with `minmax` ranges,
/// but not with `entropy`'s clipping thresholds, nor when told not to. The layers' times come
/// from a table in which float is the faster everywhere, so nothing is timed and no layer
/// takes ConvInteger.
#[test]
fn quantize_evens_out_with_minmax_ranges_only() {
    let model = Model::load(&Path::new(ROOT).join("models/cache/yunet_n_320_320.onnx")).unwrap();
    let shape = model.input_shape(None).unwrap();
    let mut table = layers::profile(&[(model.clone(), shape)], 1, 1, |_| {}).unwrap();
    for l in &mut table.layers {
        l.times = LayerTimes {
            float_ms: 1.0,
            int8_ms: 10.0,
            int8_median_faster: false,
        };
    }
    let calib = Path::new(ROOT).join("target/fixtures/compress/calib");
    for (method, equalize, chains) in [
        (Method::Minmax, true, 23),
        (Method::Entropy, true, 0),
        (Method::Minmax, false, 0),
    ] {
        let opts = quantize::Options {
            method,
            equalize,
            timings: Some(quantize::BoardTimings {
                path: "float-faster.json".into(),
                table: table.clone(),
            }),
            ..Default::default()
        };
        let (_, report) = quantize::quantize(&model, &calib, &opts, |_| {}).unwrap();
        assert_eq!(report.equalized, chains, "{method:?}, equalize: {equalize}");
        assert_eq!(report.count(Form::ConvInteger), 0);
    }
}
