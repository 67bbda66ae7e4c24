//! The whole pipeline on YOLOX-Nano, stage by stage: capture (a 640×480 YUYV frame converted to
//! RGB), preprocess, inference and postprocess (decode + NMS + mapping to source pixels).
//!
//! `cargo bench -p ocelli --bench pipeline` (models fetched first: `just fetch`).

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ocelli::capture::{PixelFormat, Source, SyntheticSource, decode_image};
use ocelli::config::{ChannelOrder, DetectorConfig, PreprocessConfig};
use ocelli::detect::{DetectTimes, Detections, Detector, Family};
use ocelli::imgproc::Image;

fn cache(name: &str) -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/cache")
        .join(name);
    assert!(p.exists(), "{} missing: run `just fetch`", p.display());
    p
}

fn stages(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline_yolox_nano");
    group.measurement_time(Duration::from_secs(8));

    let mut source = SyntheticSource::new(640, 480, PixelFormat::Yuyv, None);
    let mut rgb = Image::new(0, 0, 3);
    group.bench_function("capture_yuyv_640x480_to_rgb", |b| {
        b.iter(|| {
            source
                .next_frame()
                .unwrap()
                .unwrap()
                .to_rgb(&mut rgb)
                .unwrap()
        })
    });

    let cfg = DetectorConfig {
        name: None,
        model: cache("yolox_nano.onnx"),
        sha256: None,
        family: Some(Family::Yolox),
        labels: "coco".into(),
        input_size: None,
        preprocess: PreprocessConfig {
            channels: ChannelOrder::Bgr,
            ..Default::default()
        },
        decode: Default::default(),
    };
    let mut detector = Detector::load(&cfg, |p| p.to_path_buf()).unwrap();
    let mut photo = Image::new(0, 0, 3);
    decode_image(
        &cache("images/coffee.png"),
        ocelli::limits::DEFAULT_MAX_PIXELS,
        &mut photo,
    )
    .unwrap();
    let mut out = Detections::new();
    // One detect call runs all three stages; each benchmark reports the time of its own stage.
    type Stage = fn(&DetectTimes) -> u64;
    let stage_fns: [(&str, Stage); 3] = [
        ("preprocess", |t| t.preprocess_us),
        ("inference", |t| t.inference_us),
        ("postprocess", |t| t.postprocess_us),
    ];
    for (name, stage) in stage_fns {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        Duration::from_micros(stage(&detector.detect(&photo, &mut out).unwrap()))
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
