//! `eval`: the agreement measure on hand-made cases, and two real runs through the runtime's
//! detector (a model against itself, and against a damaged copy).

use std::path::{Path, PathBuf};

use ocelli::detect::{BBox, Detection};
use ocelli_compress::eval::{self, mean_average_precision};
use ocelli_compress::onnx::{Model, f32_proto};

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

fn det(class_id: u16, score: f32, x: f32) -> Detection {
    Detection {
        class_id,
        score,
        bbox: BBox {
            x1: x,
            y1: 0.0,
            x2: x + 10.0,
            y2: 10.0,
        },
        landmarks: None,
    }
}

/// A detection and the index of its image.
type Tagged = (usize, Detection);

#[test]
fn map_on_hand_made_cases() {
    let gt = [
        (0, det(1, 0.9, 0.0)),
        (0, det(2, 0.8, 50.0)),
        (1, det(1, 0.7, 0.0)),
    ];
    let cases: [(&str, Vec<Tagged>, f64); 6] = [
        ("identical", gt.to_vec(), 1.0),
        ("nothing at all", vec![], 0.0),
        // Class 1: one of two found (AP 0.5); class 2 found (AP 1).
        ("one miss", vec![gt[0], gt[1]], 0.75),
        // A cat called a dog: the cat class loses its only box, the dog class is all wrong.
        (
            "class swap",
            vec![gt[0], gt[2], (0, det(3, 0.8, 50.0))],
            (1.0 + 0.0 + 0.0) / 3.0,
        ),
        // Same box on the wrong image counts for nothing.
        (
            "wrong image",
            vec![gt[0], gt[1], (2, det(1, 0.7, 0.0))],
            0.75,
        ),
        // A box shifted by 8 of its 10 pixels overlaps by IoU 1/9.
        ("shifted", vec![gt[0], (0, det(2, 0.8, 58.0)), gt[2]], 0.5),
    ];
    for (name, pred, want) in cases {
        let got = mean_average_precision(&gt, &pred, 0.5);
        assert!(
            (got - want).abs() < 1e-9,
            "{name}: mAP {got}, expected {want}"
        );
    }
    assert_eq!(mean_average_precision(&[], &[], 0.5), 1.0, "both empty");
}

#[test]
fn a_model_agrees_with_itself_and_not_with_a_damaged_copy() {
    let reference = cached("yunet_n_320_320.onnx");
    let images = Path::new(CACHE).join("images");
    let opts = eval::Options {
        rounds: 1,
        setup: Default::default(),
    };
    let same = eval::eval(&reference, &reference, &images, &opts, |_| {}).unwrap();
    assert!(
        same.reference.detections > 0,
        "YuNet finds the astronaut's face"
    );
    assert_eq!(same.map50, 1.0);
    assert_eq!(same.score_drift_max, 0.0);
    assert!(same.reference.inference_ms > 0.0 && same.latency_ratio > 0.0);

    // Negate the first convolution's weights: the face must move or vanish.
    let mut damaged = Model::load(&reference).unwrap();
    let first_conv = damaged
        .graph()
        .node
        .iter()
        .find(|n| n.op_type == "Conv")
        .unwrap()
        .clone();
    let (shape, w) = damaged.constant_f32(&first_conv.input[1]).unwrap();
    let negated: Vec<f32> = w.iter().map(|x| -x).collect();
    damaged.set_initializer(f32_proto(&first_conv.input[1], &shape, &negated));
    let dir = tempfile::Builder::new()
        .prefix("ocelli-compress-eval-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("yunet_n_320_320.damaged.onnx");
    damaged.save(&path).unwrap();
    let worse = eval::eval(&reference, &path, &images, &opts, |_| {}).unwrap();
    assert!(
        worse.map50 < 1.0 || worse.score_drift_max > 0.05,
        "damage unnoticed: mAP {} drift {}",
        worse.map50,
        worse.score_drift_max
    );
}

#[test]
fn mask_and_region_iou_on_hand_made_cases() {
    use ocelli::detect::{Detections, Mask};
    use ocelli_compress::agree::{MeanIou, mask_iou};
    // 4×4 masks, column-major: pixels 2..6 and 4..8 share 2 of 6.
    let mask = |counts: &'static [u32]| Mask {
        size: [4, 4],
        counts,
        area: counts[1],
        centroid: [0.0; 2],
    };
    assert!((mask_iou(&mask(&[2, 4]), &mask(&[4, 4])) - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(mask_iou(&mask(&[0, 3, 2, 3]), &mask(&[0, 3, 2, 3])), 1.0);
    assert_eq!(mask_iou(&mask(&[0, 2]), &mask(&[8, 2])), 0.0);
    let list = |ds: &[Detection]| Detections::from_slice(ds).unwrap();
    let (a, b) = (
        list(&[det(0, 0.9, 0.0), det(1, 0.8, 50.0)]),
        list(&[det(0, 0.9, 5.0), det(2, 0.8, 50.0)]),
    );
    let mut m = MeanIou::default();
    m.add(&a, &b, |i, j| f64::from(a[i].bbox.iou(&b[j].bbox)));
    // One pair at IoU 1/3 (boxes 10 wide, 5 apart); each model's other class is unpaired.
    assert!(
        (m.value() - (1.0 / 3.0) / 3.0).abs() < 1e-6,
        "{}",
        m.value()
    );
    assert_eq!(MeanIou::default().value(), 1.0, "both empty");
}
