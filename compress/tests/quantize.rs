//! `quantize`: weights, calibration thresholds, the ConvInteger island against float, and
//! YuNet end to end on the calibration and held-out images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use ocelli::model::layers::{Calibration, Form, Layer, apply, quantize_weights};
use ocelli_compress::calib::{Method, calibrate, entropy};
use ocelli_compress::eval;
use ocelli_compress::onnx::{Model, attr, f32_proto, float_unshaped, float_value, node};
use ocelli_compress::quantize::{self, relative_l2};
use ocelli_compress::{measure, pattern_input};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The test whose `quantize` times layers holds this for writing, every other test for
/// reading: it runs alone in this binary, so that the others' load does not decide which of
/// its layers run int8.
static CPU: RwLock<()> = RwLock::new(());

fn sharing_cpu() -> RwLockReadGuard<'static, ()> {
    CPU.read().unwrap_or_else(|e| e.into_inner())
}

fn fixtures(sub: &str) -> PathBuf {
    let p = Path::new(ROOT).join("target/fixtures/compress").join(sub);
    assert!(
        p.is_dir(),
        "{} is missing: run `python3 compress/scripts/make_images.py target/fixtures/compress`",
        p.display()
    );
    p
}

fn cached(name: &str) -> PathBuf {
    let p = Path::new(ROOT).join("models/cache").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `models/fetch.sh`",
        p.display()
    );
    p
}

#[test]
fn weights_round_trip_within_half_a_step_per_channel() {
    let _cpu = sharing_cpu();
    let w: Vec<f32> = (0..2 * 18)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * if i < 18 { 0.01 } else { 3.0 })
        .collect();
    let (q, s) = quantize_weights(&[2, 2, 3, 3], &w);
    assert_eq!(s.len(), 2);
    assert!(s[1] > 100.0 * s[0], "channels keep their own scales: {s:?}");
    for (i, (x, q)) in w.iter().zip(&q).enumerate() {
        let step = s[i / 18];
        assert!(
            (x - *q as f32 * step).abs() <= step / 2.0 + 1e-6,
            "weight {i}"
        );
        assert!(*q >= -127, "symmetric range");
    }
    let (_, s) = quantize_weights(&[1, 4], &[0.0; 4]);
    assert_eq!(s, [1.0], "an all-zero channel keeps a usable scale");
}

#[test]
fn entropy_threshold_ignores_rare_outliers() {
    let _cpu = sharing_cpu();
    // Most mass below 10% of the range, a handful of outliers at the top.
    let mut hist = vec![0u64; 2048];
    for (i, h) in hist.iter_mut().enumerate().take(200) {
        *h = 1000 - i as u64 * 4;
    }
    hist[2047] = 3;
    let t = entropy(&hist, 100.0);
    assert!(t > 5.0 && t < 30.0, "threshold {t} of a range of 100");
}

#[test]
fn each_method_orders_its_thresholds_as_expected() {
    let _cpu = sharing_cpu();
    // x → Relu → y, observed at y: values spread over 0..1 with one outlier at 50.
    let model = Model::build(
        13,
        vec![node("Relu", "r", &["x"], &["y"])],
        vec![float_value("x", &[Some(1), Some(3), Some(64), Some(64)])],
        vec![float_unshaped("y")],
        vec![],
    );
    let shape = [1, 3, 64, 64];
    let mut input = pattern_input(shape, 0.0, 1.0);
    input
        .try_as_plain_ram_mut()
        .unwrap()
        .as_slice_mut::<f32>()
        .unwrap()[100] = 50.0;
    let t = |method| {
        calibrate(
            &model,
            &["y".to_string()],
            std::slice::from_ref(&input),
            shape,
            method,
            |_| {},
        )
        .unwrap()["y"]
    };
    let (minmax, percentile, entropy) =
        (t(Method::Minmax), t(Method::Percentile), t(Method::Entropy));
    assert_eq!(minmax, 50.0, "the largest magnitude");
    assert!(
        percentile < 2.0,
        "one outlier in 12288 is beyond the 99.99th percentile: {percentile}"
    );
    assert!(entropy < 5.0, "entropy clips the outlier: {entropy}");
}

/// x [1,8,16,16] → Conv 3×3 (8→16) → Relu.
fn conv_relu() -> Model {
    let w: Vec<f32> = (0..16 * 8 * 9)
        .map(|i| ((i * 7919 % 255) as f32 / 255.0 - 0.5) * 0.3)
        .collect();
    let mut c = node("Conv", "c", &["x", "w", "b"], &["c"]);
    c.attribute.push(attr::ints("pads", &[1, 1, 1, 1]));
    Model::build(
        13,
        vec![c, node("Relu", "r", &["c"], &["y"])],
        vec![float_value("x", &[Some(1), Some(8), Some(16), Some(16)])],
        vec![float_unshaped("y")],
        vec![
            f32_proto("w", &[16, 8, 3, 3], &w),
            f32_proto("b", &[16], &[0.05; 16]),
        ],
    )
}

#[test]
fn each_form_stays_close_to_float() {
    let _cpu = sharing_cpu();
    let float = conv_relu();
    let shape = [1, 8, 16, 16];
    let input = pattern_input(shape, -1.0, 1.0);
    let reference = measure::run(&float.plan(shape).unwrap(), &input).unwrap();
    let cal = Calibration {
        thresholds: HashMap::from([("x".to_string(), 1.0)]),
        means: HashMap::new(),
    };
    // (form, tolerance on the relative L2 error): weights alone lose less than weights and
    // activations; both are far from a broken island.
    for (form, tolerance) in [(Form::WeightInt8, 0.01), (Form::ConvInteger, 0.03)] {
        let layer = Layer::new("c", "x", vec![16, 8, 3, 3], shape.to_vec(), form);
        let q = apply(&float, &[layer], &cal).unwrap();
        let ops: Vec<&str> = q.graph().node.iter().map(|n| n.op_type.as_str()).collect();
        let expected = if form == Form::ConvInteger {
            "ConvInteger"
        } else {
            "DequantizeLinear"
        };
        assert!(ops.contains(&expected), "{form:?}: {ops:?}");
        let out = measure::run(&q.plan(shape).unwrap(), &input).unwrap();
        let err = relative_l2(&reference, &out).unwrap();
        assert!(
            err > 0.0 && err < tolerance,
            "{form:?}: relative error {err}"
        );
    }
}

#[test]
fn yunet_int8_is_small_and_agrees_on_held_out_images() {
    let _cpu = CPU.write().unwrap_or_else(|e| e.into_inner());
    let path = cached("yunet_n_320_320.onnx");
    let model = Model::load(&path).unwrap();
    // The layers' speeds from a table, int8 the faster for every shape: what the accuracy
    // check reverts decides the file, not which kernels are the faster on this host.
    let shape = model.input_shape(None).unwrap();
    let mut table =
        ocelli::model::layers::profile(&[(model.clone(), shape)], 1, 1, |_| {}).unwrap();
    for layer in &mut table.layers {
        layer.times = ocelli::model::layers::LayerTimes {
            float_ms: 1.0,
            int8_ms: 0.5,
            int8_median_faster: true,
        };
    }
    let opts = quantize::Options {
        timings: Some(quantize::BoardTimings {
            path: "set-times.json".into(),
            table,
        }),
        ..Default::default()
    };
    let (q, report) = quantize::quantize(&model, &fixtures("calib"), &opts, |_| {}).unwrap();
    let heads: Vec<_> = report.layers.iter().filter(|l| l.head).collect();
    assert_eq!(
        heads.len(),
        12,
        "cls, obj, bbox and kps at three strides: {:?}",
        heads.iter().map(|l| &l.output).collect::<Vec<_>>()
    );
    assert!(heads.iter().all(|l| l.form != Form::ConvInteger));
    assert!(
        report.map50 >= 0.98,
        "calibration agreement {}",
        report.map50
    );
    let dir = tempfile::Builder::new()
        .prefix("ocelli-compress-q-")
        .tempdir()
        .unwrap();
    let out = dir.path().join("yunet_n_320_320.int8.onnx");
    q.save(&out).unwrap();
    let r = eval::eval(
        &path,
        &out,
        &fixtures("eval"),
        &eval::Options {
            rounds: 0,
            setup: Default::default(),
        },
        |_| {},
    )
    .unwrap();
    // Every weight int8 makes 0.348. With every layer's activations int8, the accuracy check
    // takes about a third of the layers back towards float (0.696 seen), not all of them.
    assert!(
        r.size_ratio <= 0.75,
        "int8 file is {:.3}× the float one",
        r.size_ratio
    );
    assert!(r.reference.detections > 0, "faces in the held-out images");
    assert!(r.map50 >= 0.95, "held-out agreement {}", r.map50);
}

#[test]
fn an_empty_calibration_folder_is_one_clear_error() {
    let _cpu = sharing_cpu();
    let dir = tempfile::Builder::new()
        .prefix("ocelli-compress-empty-")
        .tempdir()
        .unwrap();
    let model = Model::load(&cached("yunet_n_320_320.onnx")).unwrap();
    let e = quantize::quantize(&model, dir.path(), &Default::default(), |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("no PNG or JPEG") && !msg.contains('\n'),
        "{msg}"
    );
}

/// The runtime's im2col (or direct convolution) takes the place of every one of tract's
/// QuantizeLinear and Im2col pairs in a ConvInteger chain, quantising the f32 image itself, and the outputs stay
/// bit-identical, saturating inputs included.
#[test]
fn fast_im2col_quantises_in_place_of_tracts_and_changes_no_output() {
    let _cpu = sharing_cpu();
    use ocelli_compress::probe::{ConvShape, Repr, chain_model};
    let shape = ConvShape {
        channels: 16,
        kernel: 3,
        size: 12,
        depthwise: false,
    };
    let model = chain_model(shape, Repr::ConvInteger);
    // The chain quantises with scale 0.02: ±5 saturates.
    let (tract_ops, fast_ops) = same_output_both_ways(&model, [1, 16, 12, 12]);
    assert_eq!(count(&tract_ops, "QuantizeLinearI8"), 4, "{tract_ops:?}");
    assert_eq!(count(&tract_ops, "Im2col"), 4, "{tract_ops:?}");
    assert_eq!(count(&fast_ops, "QuantizeLinearI8"), 0, "{fast_ops:?}");
    assert_eq!(count(&fast_ops, "FastQuantizeLinearI8"), 0, "{fast_ops:?}");
    assert_eq!(
        count(&fast_ops, direct_or("FastIm2colI8")),
        4,
        "{fast_ops:?}"
    );
}

/// How many of `ops` are `name`, or the runtime's op `name` with the scale, bias and
/// activation after it (`ConvI8+Mul+Add+Max`).
fn count(ops: &[String], name: &str) -> usize {
    let base = |o: &&String| o.split('+').next() == Some(name);
    ops.iter().filter(base).count()
}

/// The op that takes a dense int8 convolution here: the direct convolution where the CPU has
/// AVX-512 VNNI, `elsewhere` (the runtime's im2col or 1×1 packing) on other CPUs.
fn direct_or(elsewhere: &'static str) -> &'static str {
    if ocelli::kernels::conv_i8::available() {
        "ConvI8"
    } else {
        elsewhere
    }
}

/// x [1,8,16,16] → Conv 3×3 (8→16) → ReLU or SiLU → Conv 3×3 (16→16), both convolutions
/// int8: the first quantises x symmetrically (zero point 0, 127 levels a side), the second
/// the activation's output from its least value over all 256 levels (zero point -128 after
/// the ReLU, where 0 falls after the SiLU), padded with that zero point; the runtime's int8 ops
/// give tract's output bit for bit and both stay close to float.
#[test]
fn a_bounded_activation_takes_all_256_levels() {
    let _cpu = sharing_cpu();
    let silu_min = -0.278_464_55f32;
    let scale = (1.5 - silu_min) / 255.0;
    let relu = vec![node("Relu", "r", &["c"], &["y"])];
    let silu = vec![
        node("Sigmoid", "g", &["c"], &["s"]),
        node("Mul", "m", &["s", "c"], &["y"]),
    ];
    for (activation, expected) in [
        (relu, (1.5 / 255.0, -128)),
        // 0 is 39.9 steps above SiLU's least value.
        (silu, (scale, -88)),
    ] {
        let w = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * seed % 255) as f32 / 255.0 - 0.5) * 0.3)
                .collect()
        };
        let conv = |x: &str, w: &str, y: &str| {
            let mut c = node("Conv", y, &[x, w], &[y]);
            c.attribute.push(attr::ints("pads", &[1, 1, 1, 1]));
            c
        };
        let nodes = [
            vec![conv("x", "w", "c")],
            activation,
            vec![conv("y", "w2", "z")],
        ];
        let float = Model::build(
            13,
            nodes.concat(),
            vec![float_value("x", &[Some(1), Some(8), Some(16), Some(16)])],
            vec![float_unshaped("z")],
            vec![
                f32_proto("w", &[16, 8, 3, 3], &w(16 * 8 * 9, 7919)),
                f32_proto("w2", &[16, 16, 3, 3], &w(16 * 16 * 9, 104_729)),
            ],
        );
        let shape = [1, 8, 16, 16];
        let input = pattern_input(shape, -1.0, 1.0);
        let reference = measure::run(&float.plan(shape).unwrap(), &input).unwrap();
        let cal = Calibration {
            thresholds: HashMap::from([("x".to_string(), 1.0), ("y".to_string(), 1.5)]),
            means: HashMap::new(),
        };
        let layers = [
            Layer::new(
                "c",
                "x",
                vec![16, 8, 3, 3],
                shape.to_vec(),
                Form::ConvInteger,
            ),
            Layer::new(
                "z",
                "y",
                vec![16, 16, 3, 3],
                vec![1, 16, 16, 16],
                Form::ConvInteger,
            ),
        ];
        let q = apply(&float, &layers, &cal).unwrap();
        let nodes = &q.graph().node;
        let quantizes = |x: &str| {
            let n = nodes
                .iter()
                .find(|n| n.op_type == "QuantizeLinear" && n.input[0] == x)
                .expect("quantised");
            let value = |i: usize| q.initializer(&n.input[i]).unwrap().raw_data.clone();
            let scale = f32::from_le_bytes(value(1).try_into().unwrap());
            let conv = nodes
                .iter()
                .find(|c| c.op_type == "ConvInteger" && c.input[0] == n.output[0])
                .expect("read by ConvInteger");
            // ConvInteger's x_zero_point, where not 0, is QuantizeLinear's.
            let zero_point = value(2)[0] as i8;
            assert_eq!(conv.input.get(2).is_some(), zero_point != 0, "{conv:?}");
            (scale, zero_point)
        };
        assert_eq!(quantizes("x"), (1.0 / 127.0, 0));
        assert_eq!(quantizes("y"), expected);
        let out = measure::run(&q.plan(shape).unwrap(), &input).unwrap();
        let err = relative_l2(&reference, &out).unwrap();
        assert!(err > 0.0 && err < 0.03, "relative error {err}");
        let (_, fast_ops) = same_output_both_ways(&q, shape);
        assert_eq!(
            count(&fast_ops, direct_or("FastIm2colI8")),
            2,
            "{fast_ops:?}"
        );
    }
}

/// The runtime's 1×1 and depthwise int8 ops replace tract's in the probe's ConvInteger chains
/// (QuantizeLinear, convolution, Cast, Mul, Add, ReLU, four times over) and the outputs stay
/// bit-identical.
#[test]
fn fast_pointwise_and_depthwise_change_no_output() {
    let _cpu = sharing_cpu();
    use ocelli_compress::probe::{ConvShape, Repr, chain_model};
    for (kernel, depthwise, op) in [
        (1, false, direct_or("QuantizePackI8")),
        (3, true, "DepthwiseI8"),
    ] {
        let shape = ConvShape {
            channels: 24,
            kernel,
            size: 13,
            depthwise,
        };
        let model = chain_model(shape, Repr::ConvInteger);
        let (_, fast_ops) = same_output_both_ways(&model, [1, 24, 13, 13]);
        assert_eq!(count(&fast_ops, op), 4, "{fast_ops:?}");
    }
}

/// Plans `model` with and without the runtime's fast int8 ops, checks both give the same
/// output bit for bit on an input that saturates the quantisation, returns both op lists.
fn same_output_both_ways(model: &Model, shape: [usize; 4]) -> (Vec<String>, Vec<String>) {
    let input = pattern_input(shape, -5.0, 5.0);
    let run = |fast: bool| {
        let plan = model.plan_with(shape, fast).unwrap();
        let names: Vec<String> = plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        (names, measure::run(&plan, &input).unwrap())
    };
    let (tract_ops, tract_out) = run(false);
    let (fast_ops, fast_out) = run(true);
    assert_eq!(tract_out, fast_out, "{fast_ops:?}");
    (tract_ops, fast_ops)
}

/// The fast int8 im2col (or direct convolution) replaces tract's for every geometry and gives
/// the same result:
/// strides, padding, dilation, channel counts that leave K and the output positions
/// off the kernels' multiples.
#[test]
fn fast_im2col_packs_what_tracts_does() {
    let _cpu = sharing_cpu();
    // (input channels, output channels, kernel, stride, pad, dilation, input size)
    let cases = [
        (8, 16, 3, 1, 1, 1, 16),
        (5, 7, 3, 2, 1, 1, 15),
        (3, 16, 3, 2, 0, 1, 17),
        (6, 8, 3, 1, 2, 2, 13),
        (4, 12, 5, 1, 2, 1, 9),
        // Rows longer than one 16-byte copy, and stride 2 wide enough for the SIMD split.
        (3, 8, 3, 1, 1, 1, 40),
        (4, 8, 3, 2, 1, 1, 70),
        (3, 8, 3, 3, 1, 1, 20),
    ];
    for (ci, co, k, stride, pad, dilation, size) in cases {
        let w: Vec<f32> = (0..co * ci * k * k)
            .map(|i| ((i * 7919 % 255) as f32 / 255.0 - 0.5) * 0.3)
            .collect();
        let mut c = node("Conv", "c", &["x", "w", "b"], &["c"]);
        c.attribute.push(attr::ints("pads", &[pad; 4]));
        c.attribute.push(attr::ints("strides", &[stride; 2]));
        c.attribute.push(attr::ints("dilations", &[dilation; 2]));
        let float = Model::build(
            13,
            vec![c, node("Relu", "r", &["c"], &["y"])],
            vec![float_value(
                "x",
                &[Some(1), Some(ci), Some(size), Some(size)],
            )],
            vec![float_unshaped("y")],
            vec![
                f32_proto("w", &[co, ci, k, k], &w),
                f32_proto("b", &[co], &vec![0.05; co]),
            ],
        );
        let q =
            ocelli::model::layers::conv_integer_island(&float, "c", &[1, ci, size, size]).unwrap();
        let case = (ci, co, k, stride, pad, dilation, size);
        let (tract_ops, fast_ops) = same_output_both_ways(&q, [1, ci, size, size]);
        assert_eq!(
            (count(&tract_ops, "Im2col"), count(&fast_ops, "Im2col")),
            (1, 0),
            "{case:?}: {tract_ops:?} / {fast_ops:?}"
        );
        assert_eq!(
            count(&fast_ops, direct_or("FastIm2colI8")),
            1,
            "{case:?}: {fast_ops:?}"
        );
    }
}

/// YOLOv8n with every dense 3×3 convolution as ConvInteger: tract reaches these layers'
/// Im2col with and without the batch axis (CHW inside the model) and at strides 1 and 2; the
/// fast ops replace every one and the outputs stay bit-identical.
#[test]
fn fast_int8_ops_keep_yolov8n_bit_identical() {
    let _cpu = sharing_cpu();
    let mut float = Model::load(&cached("arch/yolov8n_320.onnx")).unwrap();
    // Folds the exported shape arithmetic, which leaves the biases constant.
    ocelli_compress::optimize::optimize(&mut float, &Default::default()).unwrap();
    let mut layers = Vec::new();
    let mut thresholds = HashMap::new();
    for n in float.graph().node.iter().filter(|n| n.op_type == "Conv") {
        let grouped = n.attribute.iter().any(|a| a.name == "group" && a.i != 1);
        let Some((wshape, _)) = float.constant_f32(&n.input[1]) else {
            continue;
        };
        if grouped || wshape.len() != 4 || wshape[2] != 3 {
            continue;
        }
        thresholds.insert(n.input[0].clone(), 4.0);
        layers.push(Layer::new(
            &n.output[0],
            &n.input[0],
            wshape,
            vec![],
            Form::ConvInteger,
        ));
    }
    let cal = Calibration {
        thresholds,
        means: HashMap::new(),
    };
    let q = apply(&float, &layers, &cal).unwrap();
    let (tract_ops, fast_ops) = same_output_both_ways(&q, q.input_shape(None).unwrap());
    assert!(layers.len() > 30, "{} dense 3×3 layers", layers.len());
    assert_eq!(count(&tract_ops, "Im2col"), layers.len(), "{tract_ops:?}");
    assert_eq!(count(&fast_ops, "Im2col"), 0, "{fast_ops:?}");
    assert_eq!(
        count(&fast_ops, direct_or("FastIm2colI8")),
        layers.len(),
        "{fast_ops:?}"
    );
}
