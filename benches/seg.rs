//! Instance segmentation's cost after inference, next to inference itself.
//!
//! `seg/inference_<size>`: YOLOv8n-seg (random weights) in tract on a photo, at 320 and at
//! 640 (the 320 model with its head's constants rewritten for 640 by
//! `tests/reference/ultralytics_seg.py`, which `just fixtures` runs). `seg/masks_<size>`:
//! decoding, NMS, mapping to a 1280×720 source, and per instance the prototype weighing, the
//! bilinear upsampling and the RLE encoding (`Decoder::decode` + `Decoder::extras`), on
//! synthetic outputs of a `size`×`size` model with ten instances of all sizes (trained
//! weights give real masks; random weights give noise). `_cleaned` adds a 5 px opening and
//! closing and a minimum area.
//!
//! `just bench-seg`, or `cargo bench -p ocelli --bench seg` after `just fixtures`.

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use ocelli::capture::decode_image;
use ocelli::config::{DetectorConfig, PadPlacement, PreprocessConfig, SizeRounding};
use ocelli::detect::{
    DecodeConfig, Detections, Detector, Extras, Family, Labels, Output, OutputInfo, Target,
    decoder_for,
};
use ocelli::imgproc::Image;
use ocelli::imgproc::geometry::{Fit, Letterbox, Placement, Rounding};

const SOURCE: (usize, usize) = (1280, 720);
const COEFFICIENTS: usize = 32;
const CLASSES: usize = 80;

fn cache(name: &str) -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/cache")
        .join(name);
    assert!(p.exists(), "{} missing: run `just fetch`", p.display());
    p
}

/// Outputs of a `size`×`size` YOLOv8-seg model: ten instances (centre and side as fractions
/// of the input) and smooth prototypes.
fn synthetic(size: usize) -> Vec<(OutputInfo, Vec<f32>)> {
    let mut seed = 0x2545_f491_u64;
    let mut random = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    let anchors: usize = [8, 16, 32].iter().map(|s| (size / s) * (size / s)).sum();
    let rows = 4 + CLASSES + COEFFICIENTS;
    let mut boxes = vec![0.0f32; rows * anchors];
    let instances = [
        (0.5, 0.5, 0.6),
        (0.3, 0.4, 0.3),
        (0.7, 0.6, 0.35),
        (0.2, 0.7, 0.15),
        (0.8, 0.3, 0.2),
        (0.5, 0.8, 0.1),
        (0.1, 0.2, 0.08),
        (0.9, 0.9, 0.12),
        (0.4, 0.2, 0.05),
        (0.6, 0.4, 0.25),
    ];
    for (k, &(cx, cy, side)) in instances.iter().enumerate() {
        let a = k * anchors / instances.len();
        let s = size as f32;
        for (r, v) in [cx * s, cy * s, side * s, side * s * 1.3]
            .into_iter()
            .enumerate()
        {
            boxes[r * anchors + a] = v;
        }
        boxes[(4 + k % CLASSES) * anchors + a] = 0.9 - 0.02 * k as f32;
        boxes[(4 + CLASSES) * anchors + a] = 1.0;
        for c in 1..COEFFICIENTS {
            boxes[(4 + CLASSES + c) * anchors + a] = random() - 0.5;
        }
    }
    let p = size / 4;
    let mut protos = vec![1.0f32; COEFFICIENTS * p * p];
    for plane in protos.chunks_exact_mut(p * p).skip(1) {
        let (fx, fy, phase) = (random() * 6.0 - 3.0, random() * 6.0 - 3.0, random() * 6.3);
        for (i, v) in plane.iter_mut().enumerate() {
            let (x, y) = ((i % p) as f32 / p as f32, (i / p) as f32 / p as f32);
            *v = (std::f32::consts::TAU * (fx * x + fy * y) + phase).cos();
        }
    }
    let info = |name: &str, shape: Vec<usize>| OutputInfo {
        name: name.into(),
        shape,
    };
    vec![
        (info("output0", vec![1, rows, anchors]), boxes),
        (info("output1", vec![1, COEFFICIENTS, p, p]), protos),
    ]
}

fn masks(c: &mut Criterion) {
    let mut group = c.benchmark_group("seg");
    group.measurement_time(Duration::from_secs(8));
    let mut photo = Image::new(0, 0, 3);
    decode_image(
        &cache("images/astronaut.png"),
        ocelli::limits::DEFAULT_MAX_PIXELS,
        &mut photo,
    )
    .unwrap();
    let mut out = Detections::new();
    let model_640 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fixtures/seg/arch_seg_640/model.onnx");
    assert!(
        model_640.exists(),
        "{} missing: run `just fixtures`",
        model_640.display()
    );
    for (name, model) in [
        ("inference_320", cache("arch/yolov8n-seg_320.onnx")),
        ("inference_640", model_640),
    ] {
        let cfg = DetectorConfig {
            name: None,
            model,
            sha256: None,
            family: Some(Family::Yolov8Seg),
            labels: "coco".into(),
            input_size: None,
            preprocess: PreprocessConfig {
                size_rounding: SizeRounding::Nearest,
                pad: PadPlacement::Center,
                std: [255.0; 3],
                ..Default::default()
            },
            decode: Default::default(),
        };
        let mut detector = Detector::load(&cfg, |p| p.to_path_buf()).unwrap();
        // Inference takes a tenth of a second or more: ten samples of a few runs each.
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let times = detector.detect(&photo, &mut out).unwrap();
                        Duration::from_micros(times.inference_us)
                    })
                    .sum()
            })
        });
    }

    group.sample_size(100).sampling_mode(SamplingMode::Auto);
    let cleaned = DecodeConfig {
        mask_open: 5,
        mask_close: 5,
        mask_min_area: 50,
        ..Default::default()
    };
    for (size, name, decode) in [
        (320, "masks_320", DecodeConfig::default()),
        (640, "masks_640", DecodeConfig::default()),
        (640, "masks_640_cleaned", cleaned),
    ] {
        let outputs = synthetic(size);
        let infos: Vec<OutputInfo> = outputs.iter().map(|(i, _)| i.clone()).collect();
        let views: Vec<Output> = outputs
            .iter()
            .map(|(i, d)| Output {
                name: &i.name,
                shape: &i.shape,
                data: d,
            })
            .collect();
        let mut decoder = decoder_for(
            Family::Yolov8Seg,
            &decode,
            (size, size),
            &infos,
            &Labels::coco(),
        )
        .unwrap();
        let fit = Fit::Letterbox {
            placement: Placement::Centre,
            pad: 114,
        };
        let (sw, sh) = SOURCE;
        let target = Target {
            letterbox: Letterbox::plan_rounded(sw, sh, size, size, fit, Rounding::Nearest),
            width: sw,
            height: sh,
        };
        let mut extras = Extras::new();
        let mut frame = || {
            decoder.decode(&views, &mut out).unwrap();
            for d in out.iter_mut() {
                d.bbox = target.letterbox.box_to_source(&d.bbox, sw, sh);
            }
            decoder
                .extras(&views, &target, &mut out, &mut extras)
                .unwrap();
            extras.len()
        };
        let drawn = frame();
        assert!(drawn > 0, "no synthetic instance has a mask");
        eprintln!("{name}: {drawn} masks per frame");
        group.bench_function(name, |b| b.iter(&mut frame));
    }
    group.finish();
}

criterion_group!(benches, masks);
criterion_main!(benches);
