//! The demo's detectors find the same things on every architecture.
//!
//! Runs the detectors of board-configs/host-demo.toml over its photos and writes what they found
//! to target/fixtures/cross/detections-ARCH.json. On x86-64 that file is the reference; on any
//! other architecture the run must match it: the same detections, boxes and landmarks within
//! 1 px, scores within 1e-3. tract's kernels differ per architecture (AVX-512 and NEON round
//! differently), so this is what proves a board sees what the host sees. `just test-arm` runs
//! the x86-64 test first, then this one under qemu-user.

use std::path::{Path, PathBuf};

use ocelli::capture::decode_image;
use ocelli::config::{Config, SourceConfig};
use ocelli::detect::{Detection, Detections, Detector};
use ocelli::imgproc::Image;
use serde_json::{Value, json};

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../board-configs/host-demo.toml"
);
const OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures/cross");
const REFERENCE_ARCH: &str = "x86_64";

/// The largest differences accepted from the reference.
const PIXELS: f64 = 1.0;
const SCORE: f64 = 1e-3;

/// `{"image/detector": [[class, score, x1, y1, x2, y2, landmark x, y, ...], ...]}`.
fn run_demo_detectors() -> serde_json::Map<String, Value> {
    let config = Config::load(Path::new(CONFIG))
        .unwrap_or_else(|e| panic!("{e}\nFetch the models and photos with `just fetch`."));
    let SourceConfig::Images { path, .. } = &config.source else {
        panic!("{CONFIG}: the source is not a folder of images");
    };
    let mut photos: Vec<PathBuf> = std::fs::read_dir(config.resolve(path))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    // The photos shared out over the CPUs, each thread with its own detectors: under
    // emulation a photo takes 7 s through both, and the test is alone in its executable.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(photos.len());
    let mut found = serde_json::Map::new();
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..threads)
            .map(|t| {
                let (config, photos) = (&config, &photos);
                s.spawn(move || {
                    let mut detectors: Vec<Detector> = config
                        .detectors
                        .iter()
                        .map(|d| Detector::load(d, |p| config.resolve(p)).unwrap())
                        .collect();
                    let (mut rgb, mut dets) = (Image::new(0, 0, 3), Detections::new());
                    let mut found = vec![];
                    for photo in photos.iter().skip(t).step_by(threads) {
                        decode_image(photo, ocelli::limits::DEFAULT_MAX_PIXELS, &mut rgb).unwrap();
                        let stem = photo.file_stem().unwrap().to_string_lossy();
                        for detector in &mut detectors {
                            detector.detect(&rgb, &mut dets).unwrap();
                            let rows = dets.iter().map(row).collect();
                            found.push((format!("{stem}/{}", detector.name), Value::Array(rows)));
                        }
                    }
                    found
                })
            })
            .collect();
        for run in runs {
            found.extend(run.join().unwrap());
        }
    });
    found
}

/// A detection as `[class, score, x1, y1, x2, y2, landmark x, y, ...]`.
fn row(d: &Detection) -> Value {
    let b = d.bbox;
    let mut row = vec![json!(d.class_id), json!(d.score)];
    row.extend([b.x1, b.y1, b.x2, b.y2].map(|v| json!(v)));
    row.extend(d.landmarks.iter().flatten().flatten().map(|v| json!(v)));
    Value::Array(row)
}

/// Whether two rows agree: same class, same shape, score and coordinates within bounds.
fn close(a: &[Value], b: &[Value]) -> bool {
    let f = |v: &Value| v.as_f64().unwrap();
    a.len() == b.len()
        && a[0] == b[0]
        && (f(&a[1]) - f(&b[1])).abs() <= SCORE
        && a[2..]
            .iter()
            .zip(&b[2..])
            .all(|(x, y)| (f(x) - f(y)).abs() <= PIXELS)
}

#[test]
fn detections_match_x86_64() {
    let found = run_demo_detectors();
    let arch = std::env::consts::ARCH;
    std::fs::create_dir_all(OUT).unwrap();
    let written = Path::new(OUT).join(format!("detections-{arch}.json"));
    std::fs::write(&written, serde_json::to_string_pretty(&found).unwrap()).unwrap();
    if arch == REFERENCE_ARCH {
        return;
    }
    let reference_file = Path::new(OUT).join(format!("detections-{REFERENCE_ARCH}.json"));
    let reference: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(&reference_file).unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e}\nRun `cargo test -p ocelli --test same_detections` on an \
                 x86-64 host first (`just test-arm` does).",
                reference_file.display()
            )
        }))
        .unwrap();
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>(),
        "not the same photos and detectors as the reference"
    );
    let mut differences = vec![];
    for (key, want) in &reference {
        let want = want.as_array().unwrap();
        let mut free: Vec<&Vec<Value>> = found[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap())
            .collect();
        for w in want {
            if let Some(i) = free.iter().position(|g| close(g, w.as_array().unwrap())) {
                free.swap_remove(i);
            } else {
                differences.push(format!("{key}: {arch} lacks {w}"));
            }
        }
        differences.extend(free.iter().map(|g| format!("{key}: {arch} adds {g:?}")));
    }
    assert!(
        differences.is_empty(),
        "{arch} differs from {REFERENCE_ARCH} (score within {SCORE}, coordinates within \
         {PIXELS} px; see {}):\n{}",
        written.display(),
        differences.join("\n")
    );
}
