//! `--config`: a device config's `[[detector]]` table feeds and decodes a model whatever its
//! file is called, exactly as the built-in presets (tables of the same kind) do.

use std::path::{Path, PathBuf};

use ocelli::config::{Config, DetectorConfig};
use ocelli_compress::data::{self, DataError, Setup};
use ocelli_compress::onnx::Model;
use ocelli_compress::quantize;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A fresh folder, removed with everything in it when the guard is dropped.
fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-compress-setup-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A copy of `model` under a name no preset matches.
fn hidden_copy(model: &Path, dir: &Path) -> PathBuf {
    let p = dir.join("my_detector.onnx");
    std::fs::copy(model, &p).unwrap();
    p
}

fn config(file: &Path, detector: &str) -> Setup {
    Setup {
        config: Some(file.into()),
        detector: Some(detector.into()),
        preset: None,
    }
}

/// What decides how a model is fed and decoded, the model's own path aside.
fn settings(d: &DetectorConfig) -> String {
    format!(
        "{:?} {} {:?} {:?} {:?}",
        d.family, d.labels, d.input_size, d.preprocess, d.decode
    )
}

#[test]
fn the_presets_file_is_a_device_config_for_every_reference_detector() {
    let file = Path::new(ROOT).join("compress/configs/presets.toml");
    // Only the name matters: neither path reads the model.
    let hidden = Path::new("my_detector.onnx");
    for preset in data::presets() {
        let name = preset.name.clone().unwrap();
        let by_name = data::detector_config(hidden, &config(&file, &name)).unwrap();
        let by_preset = data::detector_config(
            hidden,
            &Setup {
                preset: Some(name.clone()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(settings(&by_name), settings(&by_preset), "{name}");
        assert_eq!(
            by_name.model, hidden,
            "{name}: the given model, not the table's"
        );
    }
}

/// Every detector of the shipped board configs is fed as its reference detector's preset
/// feeds it; only the thresholds are the device's own choice.
#[test]
fn board_configs_feed_each_reference_detector_as_its_preset() {
    let tmp = scratch("boards");
    let mut checked = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("board-configs")).unwrap() {
        let file = entry.unwrap().path();
        let board = Config::load_settings(&file).unwrap();
        for d in &board.detectors {
            let name = d.name.clone().unwrap();
            let hidden = hidden_copy(&board.resolve(&d.model), tmp.path());
            let from_board = data::detector_config(&hidden, &config(&file, &name)).unwrap();
            let preset = data::detector_config(&board.resolve(&d.model), &Setup::default())
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()));
            let what = format!("{}: {name}", file.display());
            assert_eq!(from_board.preprocess, preset.preprocess, "{what}");
            assert_eq!(from_board.family, preset.family, "{what}");
            assert_eq!(from_board.labels, preset.labels, "{what}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "{checked} board detectors");
}

/// The same model from `--config` as from the preset, byte for byte. Every layer is held to
/// one form (no speed choice): timing on a loaded machine would otherwise decide differently
/// from run to run.
#[test]
fn quantize_with_a_board_config_gives_the_presets_model() {
    let tmp = scratch("quantize");
    let yunet = Path::new(ROOT).join("models/cache/yunet_n_320_320.onnx");
    let calib = Path::new(ROOT).join("target/fixtures/compress/calib");
    assert!(
        calib.is_dir(),
        "run `python3 compress/scripts/make_images.py target/fixtures/compress`"
    );
    let hidden = hidden_copy(&yunet, tmp.path());
    let run = |model: &Path, setup: Setup| {
        let opts = quantize::Options {
            setup,
            speed_rounds: 1,
            min_speedup: f64::INFINITY,
            ..Default::default()
        };
        let (q, _) =
            quantize::quantize(&Model::load(model).unwrap(), &calib, &opts, |_| {}).unwrap();
        let out = tmp.path().join("out.onnx");
        q.save(&out).unwrap();
        std::fs::read(&out).unwrap()
    };
    let rpi5 = Path::new(ROOT).join("board-configs/rpi5.toml");
    let preset = run(&yunet, Setup::default());
    assert!(preset == run(&hidden, config(&rpi5, "faces")));
}

#[test]
fn a_model_without_preset_or_config_is_told_how_to_give_one() {
    let e = data::detector_config(Path::new("my_detector.onnx"), &Setup::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::NoPreset { .. }));
    assert!(
        msg.contains("--config") && msg.contains("--detector"),
        "{msg}"
    );
}

#[test]
fn config_errors_are_one_line_naming_file_and_field() {
    let tmp = scratch("errors");
    let unknown_family = tmp.path().join("family.toml");
    std::fs::write(
        &unknown_family,
        "[source]\nkind = \"synthetic\"\n\n[[detector]]\nmodel = \"m.onnx\"\nfamily = \"yolov99\"\n",
    )
    .unwrap();
    let rpi4 = Path::new(ROOT).join("board-configs/rpi4.toml");
    let two = Path::new(ROOT).join("board-configs/rpi5.toml");
    let cases = [
        (
            config(&unknown_family, "m"),
            "family.toml:6: family: unknown variant `yolov99`",
        ),
        (
            config(&rpi4, "nope"),
            "rpi4.toml: detector.name: no detector named nope",
        ),
        (
            Setup {
                detector: None,
                ..config(&two, "")
            },
            "rpi5.toml: detector.name: 2 detectors, none with model file my_detector.onnx",
        ),
    ];
    for (setup, expected) in cases {
        let msg = data::detector_config(Path::new("my_detector.onnx"), &setup)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(expected) && !msg.contains('\n'), "{msg}");
    }
}

/// Each family with masks or regions is judged by its own measure: a model agrees with
/// itself completely, and the measure is in the JSON report.
#[test]
fn masks_and_text_regions_are_judged_by_their_iou() {
    use ocelli_compress::agree::Metric;
    use ocelli_compress::eval;
    let file = Path::new(ROOT).join("compress/configs/masks-and-text.toml");
    let board = Config::load_settings(&file).unwrap();
    let images = Path::new(ROOT).join("models/cache/images");
    for (name, metric) in [("segments", Metric::MaskIou), ("text", Metric::RegionIou)] {
        let d = board
            .detectors
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
            .unwrap();
        let model = board.resolve(&d.model);
        let opts = eval::Options {
            rounds: 0,
            setup: config(&file, name),
        };
        let r = eval::eval(&model, &model, &images, &opts, |_| {}).unwrap();
        assert_eq!(r.family.metric, metric, "{name}");
        assert!(r.reference.detections > 0, "{name}: nothing to compare");
        let json = serde_json::to_value(&r).unwrap();
        let field = if metric == Metric::MaskIou {
            "mask_iou"
        } else {
            "region_iou"
        };
        assert_eq!(json[field], 1.0, "{name}: {}", json[field]);
    }
}

/// `quantize` reports the family's own measure beside mAP@0.5 and holds PP-OCRv4's text
/// regions to its IoU budget. The segmentation model has random weights, whose near-zero
/// scores no int8 form keeps in order: it is held to no budget, only measured.
#[test]
fn quantize_judges_masks_and_text_regions_by_their_iou() {
    use ocelli_compress::agree::Metric;
    let file = Path::new(ROOT).join("compress/configs/masks-and-text.toml");
    let board = Config::load_settings(&file).unwrap();
    // The five whole photos of the calibration set, not their 20 variants: the measures and
    // the budget are what is tested, and the dev build takes minutes over all 25.
    let calib = scratch("calib-whole");
    for entry in std::fs::read_dir(Path::new(ROOT).join("target/fixtures/compress/calib")).unwrap()
    {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("_whole.png")
        {
            std::fs::copy(&p, calib.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    for (name, metric, field, held) in [
        ("segments", Metric::MaskIou, "mask_iou", false),
        ("text", Metric::RegionIou, "region_iou", true),
    ] {
        let d = board
            .detectors
            .iter()
            .find(|d| d.name.as_deref() == Some(name))
            .unwrap();
        let model = Model::load(&board.resolve(&d.model)).unwrap();
        let mut opts = quantize::Options {
            setup: config(&file, name),
            speed_rounds: 1,
            ..Default::default()
        };
        if !held {
            (opts.min_map, opts.max_score_drift, opts.min_iou) = (0.0, f32::INFINITY, 0.0);
        }
        let (_, report) = quantize::quantize(&model, calib.path(), &opts, |_| {}).unwrap();
        assert_eq!(report.family.metric, metric, "{name}");
        let json = serde_json::to_value(&report).unwrap();
        let iou = json[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: no {field} in {json}"));
        assert!((0.0..=1.0).contains(&iou), "{name}: {field} {iou}");
        if held {
            assert!(iou >= opts.min_iou, "{name}: {field} {iou}");
        }
    }
}
