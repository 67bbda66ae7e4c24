//! End-to-end: the `ocelli` binary on real models, real photos and bad input.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{Running, emulated, ocelli_command, slowdown, wait_for};
use tempfile::TempDir;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fetched model or photo; the suite fetches them first (`just fetch`).
fn cached(name: &str) -> PathBuf {
    let p = root().join("models/cache").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `just fetch` (models/fetch.sh) first",
        p.display()
    );
    p
}

fn ocelli(args: &[&str]) -> Output {
    ocelli_command(args).output().expect("ocelli runs")
}

/// A fresh folder, removed with everything in it when the guard is dropped: bound before the
/// processes that use it, it outlives them.
fn scratch(name: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-cli-{name}-"))
        .tempdir()
        .unwrap()
}

/// The process failed with exactly one line on stderr that contains every `needle`, no panic.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got: {stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "error {stderr:?} does not mention {n:?}"
        );
    }
}

/// How many JSON lines `path` holds so far (0 before it exists).
fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// `ocelli run config`, started with its stderr going to the file `stderr`.
fn run_logging_stderr(config: &Path, stderr: &Path) -> Running {
    Running(
        ocelli_command(&["run", config.to_str().unwrap()])
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn yolox_config(dir: &Path, extra: &str, source: &Path) -> PathBuf {
    let text = format!(
        "[source]\nkind = \"images\"\npath = {source:?}\n\n[[detector]]\nmodel = {model:?}\nfamily = \"yolox\"\n\
         preprocess = {{ channels = \"bgr\" }}\n{extra}\n[output]\nprint = true\n",
        model = cached("yolox_nano.onnx"),
    );
    write(dir, "config.toml", &text)
}

#[test]
fn demo_config_finds_the_reference_objects() {
    let tmp = scratch("demo");
    let dir = tmp.path();
    // The demo config, with its outputs moved to a scratch folder.
    let demo = std::fs::read_to_string(root().join("board-configs/host-demo.toml")).unwrap();
    let demo = demo
        .replace(
            "../models/cache",
            root().join("models/cache").to_str().unwrap(),
        )
        .replace("../out/demo", dir.join("annotated").to_str().unwrap())
        .replace("../out/ocelli.sock", dir.join("s.sock").to_str().unwrap());
    let checked = [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "text.png",
        "page.png",
    ];
    for photo in checked {
        cached(&format!("images/{photo}"));
    }
    // Under emulation, where a photo takes 8 s through both detectors, the photos checked
    // below alone: same_detections runs every photo through these detectors there, and
    // compares what they find with the host's.
    let demo = if emulated() {
        let photos = dir.join("photos");
        std::fs::create_dir(&photos).unwrap();
        for photo in checked {
            std::fs::copy(cached(&format!("images/{photo}")), photos.join(photo)).unwrap();
        }
        let all = cached("images");
        assert!(demo.contains(all.to_str().unwrap()), "{demo}");
        demo.replace(all.to_str().unwrap(), photos.to_str().unwrap())
    } else {
        demo
    };
    let config = write(dir, "demo.toml", &demo);
    let out = ocelli(&["run", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(&str, &str, f32)> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[1], f[2], f[3].parse().unwrap_or(-1.0)))
        })
        .collect();
    let best = |photo: &str, label: &str| {
        rows.iter()
            .filter(|r| r.0 == photo && r.1 == label)
            .map(|r| r.2)
            .fold(f32::NAN, f32::max)
    };
    // Expected scores from the models' reference runs (../shared/models/README.md).
    for (photo, label, expected) in [
        ("chelsea.png", "cat", 0.64),
        ("astronaut.png", "person", 0.93),
        ("astronaut.png", "face", 0.94),
        ("coffee.png", "cup", 0.90),
    ] {
        let score = best(photo, label);
        assert!(
            (score - expected).abs() < 0.05,
            "{label} on {photo}: score {score}, expected ≈{expected}\n{stdout}"
        );
    }
    // What a newcomer sees first: no object on handwriting or a printed page.
    for photo in ["text.png", "page.png"] {
        let found: Vec<_> = rows.iter().filter(|r| r.0 == photo).collect();
        assert!(found.is_empty(), "{photo}: {found:?}");
    }
    for photo in ["astronaut", "chelsea", "coffee"] {
        let png = dir.join("annotated").join(format!("{photo}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", png.display());
    }
    assert!(!dir.join("s.sock").exists(), "socket file left behind");
}

/// The cascade demo with its outputs in `dir` and `budget` for the classifier's `max_crops`.
fn cascade_config(dir: &Path, budget: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("board-configs/host-cascade.toml")).unwrap();
    let text = text
        .replace("../models", root().join("models").to_str().unwrap())
        .replace(
            "../out/cascade.jsonl",
            dir.join("frames.jsonl").to_str().unwrap(),
        )
        .replace("../out/cascade", dir.join("annotated").to_str().unwrap())
        .replace("max_crops = 16", budget);
    cached("ch_PP-OCRv4_det_infer.onnx");
    cached("ch_ppocr_mobile_v2.0_cls_infer.onnx");
    cached("images/page.png");
    write(dir, "cascade.toml", &text)
}

/// Runs the cascade demo into `scratch(name)` with `budget`; returns the folder and its one
/// frame record.
fn run_cascade(name: &str, budget: &str) -> (TempDir, serde_json::Value) {
    let dir = scratch(name);
    let out = ocelli(&["run", cascade_config(dir.path(), budget).to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frame = read_jsonl(&dir.path().join("frames.jsonl")).swap_remove(0);
    (dir, frame)
}

#[test]
fn the_cascade_demo_labels_every_text_line_within_its_budget() {
    let (dir, frame) = run_cascade("cascade", "max_crops = 16");
    let dets = frame["detections"].as_array().unwrap();
    assert_eq!(dets.len(), 7, "page.png's seven lines: {frame}");
    for d in dets {
        let classes = d["classes"].as_array().unwrap();
        assert_eq!(classes.len(), 1, "{d}");
        assert_eq!(classes[0]["classifier"], "orientation");
        assert!(
            ["0", "180"].contains(&classes[0]["label"].as_str().unwrap()),
            "{d}"
        );
    }
    assert_eq!(frame["unclassified"], 0);
    let png = std::fs::read(dir.path().join("annotated/page.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // Over budget: the best-scored lines are classified, the rest counted.
    let (_, frame) = run_cascade("cascade-budget", "max_crops = 3");
    let dets = frame["detections"].as_array().unwrap();
    let mut by_score: Vec<(f64, bool)> = dets
        .iter()
        .map(|d| (d["score"].as_f64().unwrap(), d.get("classes").is_some()))
        .collect();
    by_score.sort_by(|a, b| b.0.total_cmp(&a.0));
    let classified: Vec<bool> = by_score.iter().map(|d| d.1).collect();
    assert_eq!(
        classified,
        [true, true, true, false, false, false, false],
        "{frame}"
    );
    assert_eq!(frame["unclassified"], 4, "{frame}");
}

#[test]
fn truncated_onnx_is_refused_with_one_line() {
    let tmp = scratch("truncated");
    let dir = tmp.path();
    let bytes = std::fs::read(cached("yolox_nano.onnx")).unwrap();
    let model = dir.join("yolox_truncated.onnx");
    std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
    assert_one_line_error(
        &ocelli(&["inspect", model.to_str().unwrap()]),
        &["yolox_truncated.onnx"],
    );
    let config = yolox_config(dir, "", &cached("images/coffee.png"))
        .to_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        cached("yolox_nano.onnx").to_str().unwrap(),
        model.to_str().unwrap(),
    );
    std::fs::write(&config, text).unwrap();
    assert_one_line_error(
        &ocelli(&["run", &config]),
        &["yolox_truncated.onnx", "cannot load model"],
    );
}

#[test]
fn a_png_that_is_not_a_png_is_refused_with_one_line() {
    let tmp = scratch("notpng");
    let dir = tmp.path();
    let fake = write(dir, "photo.png", "this is text, not an image\n");
    let config = yolox_config(dir, "", &fake);
    let out = ocelli(&["run", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["photo.png", "not a valid PNG"]);
}

#[test]
fn a_misspelt_config_key_is_refused_with_its_line() {
    let tmp = scratch("misspelt");
    let dir = tmp.path();
    let config = yolox_config(
        dir,
        "decode = { treshold = 0.5 }\n",
        &cached("images/coffee.png"),
    );
    let out = ocelli(&["check-config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["config.toml:9:", "treshold", "score_threshold"]);
}

/// A model's card is printed by `inspect`; a card that names another file, or is not a card,
/// makes `inspect` and `check-config` fail with one line naming the card and the field.
#[test]
fn a_models_card_is_printed_and_refused_when_it_names_another_file() {
    use ocelli::model::card::{Card, Digest, SCHEMA, sha256_hex};
    let tmp = scratch("card");
    let dir = tmp.path();
    let model = dir.join("faces.onnx");
    std::fs::copy(cached("yunet_n_320_320.onnx"), &model).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let card = Card {
        schema: SCHEMA.into(),
        model: Digest::of_bytes(Path::new("faces.onnx"), &bytes),
        source: Digest::of_bytes(Path::new("yunet_n_320_320.onnx"), &bytes),
        command: vec!["ocelli-compress".into(), "optimize".into()],
        options: serde_json::json!({ "optimize": {} }),
        tool: "ocelli-compress 0.1.0".into(),
        tract: ocelli::model::card::TRACT_VERSION.into(),
        setup: serde_json::json!({ "preset": "yunet" }),
        calibration: None,
        eval: None,
    };
    card.save(&model).unwrap();
    let config = write(
        dir,
        "config.toml",
        &format!(
            "[source]\nkind = \"synthetic\"\n\n[[detector]]\nmodel = {model:?}\nfamily = \"yunet\"\n"
        ),
    );
    let m = model.to_str().unwrap();
    let out = ocelli(&["inspect", m]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("card:   {}", sha256_hex(&bytes)))
            && stdout.contains("ocelli-compress optimize"),
        "{stdout}"
    );
    assert!(
        ocelli(&["check-config", config.to_str().unwrap()])
            .status
            .success()
    );
    // The stream's first line names the model by its sha256, and its card.
    let socket = dir.join("s.sock");
    let served = write(
        dir,
        "served.toml",
        &format!(
            "{}\n[output]\nsocket = {{ path = {socket:?} }}\n",
            std::fs::read_to_string(&config).unwrap()
        ),
    );
    let _service = run_logging_stderr(&served, &dir.join("stderr"));
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(connect_when_listening(&socket)),
        &mut first,
    )
    .unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"schema": 1, "type": "models", "detectors": [{
            "detector": "faces",
            "model": m,
            "sha256": sha256_hex(&bytes),
            "card": Card::path_for(&model).to_str().unwrap(),
        }]}),
        "{first}"
    );

    let other = "0".repeat(64);
    Card {
        model: Digest {
            sha256: other.clone(),
            ..card.model.clone()
        },
        ..card
    }
    .save(&model)
    .unwrap();
    for args in [
        vec!["inspect", m],
        vec!["check-config", config.to_str().unwrap()],
    ] {
        assert_one_line_error(
            &ocelli(&args),
            &["faces.card.json: model.sha256", &other, &sha256_hex(&bytes)],
        );
    }
    std::fs::write(
        Card::path_for(&model),
        "{\"schema\": \"ocelli-model-card/1\"",
    )
    .unwrap();
    assert_one_line_error(
        &ocelli(&["check-config", config.to_str().unwrap()]),
        &["faces.card.json: not a model card", "EOF"],
    );
}

#[test]
fn a_wrong_checksum_is_refused_with_both_sums() {
    let tmp = scratch("sha");
    let dir = tmp.path();
    let zeros = "0".repeat(64);
    let config = yolox_config(
        dir,
        &format!("sha256 = \"{zeros}\"\n"),
        &cached("images/coffee.png"),
    );
    let out = ocelli(&["check-config", config.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        &[
            "config.toml:9:",
            "detector[0].sha256",
            "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
            &zeros,
        ],
    );
}

#[test]
fn a_model_that_does_not_fit_its_family_is_refused() {
    let tmp = scratch("family");
    let dir = tmp.path();
    let config = yolox_config(dir, "", &cached("images/coffee.png"));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        cached("yolox_nano.onnx").to_str().unwrap(),
        cached("yunet_n_320_320.onnx").to_str().unwrap(),
    );
    std::fs::write(&config, text).unwrap();
    assert_one_line_error(
        &ocelli(&["run", config.to_str().unwrap()]),
        &["yunet_n_320_320.onnx", "yolox"],
    );
}

#[test]
fn a_detr_model_of_unknown_layout_is_refused() {
    let tmp = scratch("detr-layout");
    let dir = tmp.path();
    let config = write(
        dir,
        "detr.toml",
        &format!(
            "[source]\nkind = \"images\"\npath = {:?}\n\n[[detector]]\nmodel = {:?}\n\
             family = \"detr\"\n\n[output]\nprint = true\n",
            cached("images/coffee.png"),
            cached("arch/yolov8n-seg_320.onnx"),
        ),
    );
    assert_one_line_error(
        &ocelli(&["check-config", config.to_str().unwrap()]),
        &["yolov8n-seg_320.onnx", "detr decoder", "detector.family"],
    );
}

#[test]
fn a_classifier_of_the_wrong_shape_or_gallery_is_refused() {
    let tmp = scratch("classifier-bad");
    let dir = tmp.path();
    let config = |classifier: &str| {
        let text = format!(
            "[source]\nkind = \"images\"\npath = {:?}\n\n[[detector]]\nmodel = {:?}\n\
             family = \"yolox\"\n\n[[classifier]]\n{classifier}\n[output]\nprint = true\n",
            cached("images/coffee.png"),
            cached("yolox_nano.onnx"),
        );
        write(dir, "config.toml", &text)
    };
    let check = |path: PathBuf| ocelli(&["check-config", path.to_str().unwrap()]);
    let detector_as_classifier = config(&format!(
        "model = {:?}\nlabels = \"coco\"\n",
        cached("arch/yolov8n_320.onnx")
    ));
    assert_one_line_error(
        &check(detector_as_classifier),
        &[
            "yolov8n_320.onnx",
            "expected one [1,C] class scores or [1,D] embedding",
        ],
    );
    write(
        dir,
        "gallery.json",
        r#"{"entries": [{"label": "a", "embedding": [1, 0, 0]}]}"#,
    );
    let wrong_gallery = config(&format!(
        "model = {:?}\ngallery = \"gallery.json\"\ninput_size = [192, 48]\n",
        cached("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    ));
    assert_one_line_error(
        &check(wrong_gallery),
        &["gallery.json", "entries[0].embedding", "expected 2"],
    );
}

#[test]
fn inspect_recognises_each_reference_family() {
    for (model, family) in [
        ("yolox_nano.onnx", "yolox"),
        ("nanodet_m_320.onnx", "nanodet"),
        ("yunet_n_320_320.onnx", "yunet"),
        ("ultraface_version-RFB-320.onnx", "ssd"),
        ("arch/yolov8n_320.onnx", "yolov8"),
        ("arch/yolov10n-e2e_320.onnx", "yolov10"),
        ("arch/rtdetr_320.onnx", "detr"),
        ("arch/rtdetr-ul_320.onnx", "detr"),
        ("arch/dfine_320.onnx", "detr"),
        ("arch/detr_320.onnx", "detr"),
    ] {
        let out = ocelli(&["inspect", cached(model).to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("family: {family} (")),
            "{model}: {stdout}"
        );
    }
}

#[test]
fn inspect_recognises_dbnet_at_a_given_input_size() {
    let model = cached("ch_PP-OCRv4_det_infer.onnx");
    let out = ocelli(&[
        "inspect",
        model.to_str().unwrap(),
        "--input-size",
        "384",
        "192",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("output: sigmoid_0.tmp_0 [1, 1, 192, 384]"),
        "{stdout}"
    );
    assert!(stdout.contains("family: dbnet ("), "{stdout}");
}

/// tests/bundle/valid.bundle: `ocelli-compress keygen --out signer.key`, then `ocelli-compress
/// bundle --key signer.key --version 1 --config fragment.toml --out valid.bundle tiny.onnx
/// labels.txt`; signer.pub is the public key (the secret one was not kept).
#[test]
fn inspect_shows_a_bundle_and_fails_on_a_refused_one() {
    let dir = root().join("tests/bundle");
    let (bundle, key) = (dir.join("valid.bundle"), dir.join("signer.pub"));
    let (bundle, key) = (bundle.to_str().unwrap(), key.to_str().unwrap());
    let shown = |args: &[&str]| {
        let out = ocelli(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let trusted = shown(&["inspect", bundle, "--trust", key]);
    for line in [
        "version: 1\n",
        "signer:  fa07cf6ca035521c\n",
        "file:    tiny.onnx (65 bytes, sha256 65b88e4d3c796e4f170f4cbb71937a755eedcaac4a73d57bbbc917e464d53576)\n",
        "config:  fragment.toml\n  [[detector]]\n  model = \"tiny.onnx\"\n",
        "signature: valid (trusted key fa07cf6ca035521c)\n",
    ] {
        assert!(trusted.contains(line), "{trusted}");
    }
    let untrusted = shown(&["inspect", bundle]);
    assert!(
        untrusted.ends_with("signature: valid, signer not among the given keys\n"),
        "{untrusted}"
    );

    let tmp = scratch("inspect-bundle");
    let cut = tmp.path().join("cut.bundle");
    let bytes = std::fs::read(dir.join("valid.bundle")).unwrap();
    std::fs::write(&cut, &bytes[..1800]).unwrap();
    let out = ocelli(&["inspect", cut.to_str().unwrap(), "--trust", key]);
    assert_one_line_error(
        &out,
        &["cut.bundle: the header after manifest.json: truncated"],
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn every_board_preset_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("board-configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if !checked_here(&path) {
                continue;
            }
            let out = ocelli(&["check-config", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no presets in board-configs/");
}

#[test]
fn check_config_refuses_a_config_over_its_board_memory() {
    let tmp = scratch("budget");
    let dir = tmp.path();
    let config = yolox_config(dir, "", &cached("images/coffee.png"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("[board]\nmemory_mb = 32\n\n{text}")).unwrap();
    let out = ocelli(&["check-config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["board.memory_mb: 32 MB", "models", "frame buffers"]);
}

/// Every line of a JSON-lines output, each checked against the published schema.
fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/schema/frame.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Err(e) = validator.validate(&v) {
                panic!("line does not fit the schema: {e}\n{l}");
            }
            v
        })
        .collect()
}

/// Runs YOLOX-Nano on `source` with `detector` keys and the `imaging` tables added, and returns
/// the JSON lines.
fn run_yolox(dir: &Path, detector: &str, imaging: &str, source: &Path) -> Vec<serde_json::Value> {
    let jsonl = dir.join("out.jsonl");
    let config = yolox_config(dir, detector, source);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[output]\n",
        &format!("\n{imaging}\n[output]\njsonl = {jsonl:?}\n"),
    );
    std::fs::write(&config, text).unwrap();
    let out = ocelli(&["run", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_jsonl(&jsonl)
}

/// A scratch folder with an empty `frames` folder for an image sequence, and coffee.png to
/// draw the sequence from.
fn coffee_frames(name: &str) -> (TempDir, PathBuf, ocelli::imgproc::Image) {
    let dir = scratch(name);
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let mut photo = ocelli::imgproc::Image::new(0, 0, 3);
    ocelli::capture::decode_image(
        &cached("images/coffee.png"),
        ocelli::limits::DEFAULT_MAX_PIXELS,
        &mut photo,
    )
    .unwrap();
    (dir, frames, photo)
}

#[test]
fn motion_gate_skips_still_frames_and_runs_on_change() {
    let (dir, frames, mut photo) = coffee_frames("motion");
    for name in ["a", "b"] {
        ocelli::overlay::save_png(&photo, &frames.join(format!("{name}.png"))).unwrap();
    }
    // Something appears at 60..180 × 200..320 in the third frame.
    for y in 200..320 {
        for x in 60..180 {
            photo.data[(y * photo.width + x) * 3..][..3].fill(255);
        }
    }
    ocelli::overlay::save_png(&photo, &frames.join("c.png")).unwrap();
    let extra = "[imaging.motion]\nthreshold = 25\nmin_area = 0.01\n";
    let lines = run_yolox(dir.path(), "", extra, &frames);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for still in &lines[..2] {
        assert_eq!(still["inference"], "skipped", "{still}");
        assert_eq!(still["detections"].as_array().unwrap().len(), 0, "{still}");
    }
    let moved = &lines[2];
    assert_eq!(moved["inference"], "ran", "{moved}");
    assert!(
        moved["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "motion_started"),
        "{moved}"
    );
    let regions = moved["motion"]["regions"].as_array().unwrap();
    let b: Vec<f64> = regions[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        b[0] <= 60.0 && b[0] >= 40.0 && b[2] >= 180.0 && b[2] <= 200.0,
        "{b:?}"
    );
    assert!(
        b[1] <= 200.0 && b[1] >= 180.0 && b[3] >= 320.0 && b[3] <= 340.0,
        "{b:?}"
    );
    assert!(
        moved["detections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["label"] == "cup"),
        "{moved}"
    );
}

/// A labels file, named relative to the config, names the classes in the stream: line n + 1 for
/// class n, surrounding whitespace and a trailing blank line ignored.
#[test]
fn labels_from_a_file_name_the_detections() {
    let tmp = scratch("labels-file");
    let dir = tmp.path();
    let names: Vec<String> = (0..80)
        .map(|i| match i {
            41 => "  mug ".to_string(),
            _ => format!("class-{i}"),
        })
        .collect();
    write(dir, "names.txt", &(names.join("\n") + "\n\n"));
    let lines = run_yolox(
        dir,
        "labels = \"names.txt\"",
        "",
        &cached("images/coffee.png"),
    );
    let detections = lines[0]["detections"].as_array().unwrap();
    assert!(
        detections
            .iter()
            .any(|d| d["class_id"] == 41 && d["label"] == "mug"),
        "no cup labelled from the file: {}",
        lines[0]
    );
    for d in detections {
        let id = d["class_id"].as_u64().unwrap() as usize;
        assert_eq!(d["label"], names[id].trim(), "{d}");
    }
}

#[test]
fn rectified_region_is_what_the_detector_sees() {
    let tmp = scratch("rectify");
    let dir = tmp.path();
    // The table around the cup on coffee.png, slightly skewed, warped to an upright 400×320 image.
    let extra =
        "[imaging.rectify]\nquad = [[90, 0], [500, 0], [510, 380], [80, 390]]\nsize = [400, 320]\n";
    let lines = run_yolox(dir, "", extra, &cached("images/coffee.png"));
    assert_eq!(
        (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
        (Some(400), Some(320))
    );
    let cup = lines[0]["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "cup")
        .cloned();
    let cup = cup.unwrap_or_else(|| panic!("no cup in the rectified region: {}", lines[0]));
    // The cup fills most of the rectified image.
    let b: Vec<f64> = cup["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!((b[2] - b[0]) * (b[3] - b[1]) > 0.5 * 320.0 * 240.0, "{cup}");
}

#[test]
fn sighup_keeps_the_running_config_when_the_new_one_is_bad_and_sigterm_stops_cleanly() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let tmp = scratch("signals");
    let dir = tmp.path();
    let jsonl = dir.join("out.jsonl");
    let socket = dir.join("s.sock");
    let good = format!(
        "[source]\nkind = \"synthetic\"\nwidth = 320\nheight = 240\n\n[[detector]]\nmodel = {:?}\nfamily = \"yunet\"\n\
         labels = \"face\"\n\n[output]\njsonl = {jsonl:?}\nsocket = {{ path = {socket:?} }}\n",
        cached("yunet_n_320_320.onnx")
    );
    let config = write(dir, "config.toml", &good);
    let mut child = run_logging_stderr(&config, &dir.join("stderr"));
    let pid = Pid::from_raw(child.id() as i32);
    let lines = || lines_in(&jsonl);
    let log = || std::fs::read_to_string(dir.join("stderr")).unwrap();
    wait_for(60, "first frames", || lines() >= 3);
    assert!(socket.exists());

    // A broken config: refused, logged, and the pipeline goes on.
    write(
        dir,
        "config.toml",
        &good.replace("family = \"yunet\"", "family = \"yunett\""),
    );
    kill(pid, Signal::SIGHUP).unwrap();
    wait_for(30, "the refusal", || log().contains("reload refused"));
    let after = lines();
    wait_for(30, "frames after the refused reload", || {
        lines() > after + 2
    });
    assert!(log().contains("yunett"), "{}", log());

    // A client connected before the good reload is told which models run, first thing and
    // again once the reload applies.
    let client = std::io::BufReader::new(connect_when_listening(&socket));
    let models_lines = std::thread::spawn(move || {
        use std::io::BufRead;
        client
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(r#""type":"models""#))
            .take(2)
            .count()
    });

    // A good new config is applied.
    write(
        dir,
        "config.toml",
        &good.replace(
            "[[detector]]",
            "[imaging.motion]\nmin_area = 0.0\n\n[[detector]]",
        ),
    );
    kill(pid, Signal::SIGHUP).unwrap();
    wait_for(30, "the reload", || log().contains("reloaded"));

    // SIGTERM: the frame in flight finishes, outputs are flushed, the socket is removed, exit 0.
    let t = std::time::Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", log());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2) * slowdown(),
        "took {:?} to stop",
        t.elapsed()
    );
    assert!(!socket.exists(), "socket left behind");
    assert_eq!(
        models_lines.join().unwrap(),
        2,
        "the models line, before and after the reload"
    );
    let frames = read_jsonl(&jsonl);
    assert!(
        frames.iter().any(|f| f.get("motion").is_some()),
        "the reloaded config never took effect"
    );
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f["frame_id"].as_u64().unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "frame ids not consecutive: {ids:?}"
    );
}

/// The JSON-lines file holds each frame's line as soon as it is emitted, not when a buffer
/// fills or the process exits: three frames, then a camera that stays lost (the process waits
/// on it, writing nothing more but a rare notice), and a SIGKILL loses none of them.
#[test]
fn jsonl_lines_are_written_as_emitted_and_survive_sigkill() {
    let tmp = scratch("jsonl-sigkill");
    let dir = tmp.path();
    let jsonl = dir.join("out.jsonl");
    let text = format!(
        "[source]\nkind = \"synthetic\"\nwidth = 160\nheight = 120\n\
         faults = [{{ after = 3, seconds = 600 }}]\n\n[reconnect]\ndelays_s = [5.0]\n\n\
         [output]\njsonl = {jsonl:?}\n"
    );
    let config = write(dir, "config.toml", &text);
    let mut child = run_logging_stderr(&config, &dir.join("stderr"));
    let frames = || {
        std::fs::read_to_string(&jsonl).map_or(0, |t| {
            t.lines()
                .filter(|l| l.contains("\"type\":\"frame\""))
                .count()
        })
    };
    wait_for(10, "three frame lines in the file", || frames() >= 3);
    child.kill().unwrap();
    child.wait().unwrap();
    let ids: Vec<u64> = read_jsonl(&jsonl)
        .iter()
        .filter(|l| l["type"] == "frame")
        .map(|f| f["frame_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2]);
}

#[test]
fn a_lost_camera_is_reopened_with_backoff_while_the_socket_stays_up() {
    use std::io::BufRead;
    let tmp = scratch("reconnect");
    let dir = tmp.path();
    let jsonl = dir.join("out.jsonl");
    let socket = dir.join("s.sock");
    let text = format!(
        "[source]\nkind = \"synthetic\"\nwidth = 160\nheight = 120\nframes = 12\n\
         faults = [{{ after = 5, seconds = 1.2 }}]\n\n[reconnect]\ndelays_s = [0.2, 0.4]\n\n\
         [output]\njsonl = {jsonl:?}\nsocket = {{ path = {socket:?} }}\n"
    );
    let config = write(dir, "config.toml", &text);
    let child = ocelli_command(&["run", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = connect_when_listening(&socket);
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(client)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("camera lost") && stderr.contains("camera back"),
        "{stderr}"
    );

    let lines = read_jsonl(&jsonl);
    let frames: Vec<_> = lines.iter().filter(|l| l["type"] == "frame").collect();
    let ids: Vec<u64> = frames
        .iter()
        .map(|f| f["frame_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..12).collect::<Vec<_>>(), "frames lost or repeated");
    let times: Vec<u64> = frames
        .iter()
        .map(|f| f["timestamp_us"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] > w[0]),
        "timestamps not increasing: {times:?}"
    );
    // Lost after frame 4, then attempts 0.2 s, 0.4 s, 0.4 s, … until 1.2 s have passed.
    let notices: Vec<_> = lines.iter().filter(|l| l["type"] == "source").collect();
    assert_eq!(notices[0]["state"], "lost", "{notices:?}");
    assert_eq!(notices[0]["retry_in_ms"], 200, "{notices:?}");
    assert!(
        notices[1..]
            .iter()
            .all(|n| n["state"] == "reconnecting" && n["retry_in_ms"] == 400),
        "{notices:?}"
    );
    assert!(
        (3..=5).contains(&notices.len()),
        "{} notices for a 1.2 s outage: {notices:?}",
        notices.len()
    );
    let back = frames.iter().find(|f| f["frame_id"] == 5).unwrap();
    assert_eq!(back["source_status"]["reconnects"], 1, "{back}");
    assert!(
        back["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "source_restored"),
        "{back}"
    );
    // The client connected before the loss saw the notices and the frames after it.
    let received = reader.join().unwrap();
    assert!(
        received.iter().any(|l| l.contains("\"type\":\"source\"")),
        "{received:?}"
    );
    assert!(
        received.iter().any(|l| l.contains("\"frame_id\":11,")),
        "{received:?}"
    );
}

/// How many of tract's pool threads (named `ocelli-infer-N`) process `pid` has.
fn inference_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| {
        tasks
            .filter_map(Result::ok)
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("ocelli-infer"))
            })
            .count()
    })
}

#[test]
fn board_threads_give_tract_a_pool_and_the_same_detections() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    // Every photo, and the loop back to the first. Under emulation, where a frame costs
    // 5 s, one photo (a cup and a table) and the loop back to it: the kernels' split over
    // threads is what is checked there.
    let one = scratch("threads-photos");
    let photos = if emulated() {
        let photo = "coffee.png";
        std::fs::copy(cached(&format!("images/{photo}")), one.path().join(photo)).unwrap();
        one.path().to_path_buf()
    } else {
        cached("images/astronaut.png")
            .parent()
            .unwrap()
            .to_path_buf()
    };
    let frames = std::fs::read_dir(&photos).unwrap().count() + 1;
    let run = |threads: usize| {
        let tmp = scratch(&format!("threads-{threads}"));
        let dir = tmp.path();
        let jsonl = dir.join("out.jsonl");
        let text = format!(
            "[board]\nthreads = {threads}\n\n[source]\nkind = \"images\"\npath = {photos:?}\nloop = true\n\n\
             [[detector]]\nmodel = {:?}\nfamily = \"yolox\"\npreprocess = {{ channels = \"bgr\" }}\n\n\
             [output]\njsonl = {jsonl:?}\n",
            cached("yolox_nano.onnx")
        );
        let config = write(dir, "config.toml", &text);
        let mut child = Running(
            ocelli_command(&["run", config.to_str().unwrap()])
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let lines = || lines_in(&jsonl);
        wait_for(120, "frames", || lines() >= frames);
        let pool = inference_threads(child.id());
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert!(child.wait().unwrap().success());
        let detections: Vec<_> = read_jsonl(&jsonl)
            .into_iter()
            .take(frames)
            .map(|f| f["detections"].clone())
            .collect();
        (pool, detections)
    };
    let (pool1, one) = run(1);
    let (pool2, two) = run(2);
    assert_eq!(
        (pool1, pool2),
        (0, 2),
        "pool threads with threads = 1 and 2"
    );
    // tract splits the work on tile and row boundaries: the sums, and so the results, are the
    // same bits.
    assert_eq!(one, two);
}

#[test]
fn an_object_sliding_across_image_files_keeps_its_track_id() {
    use ocelli::capture::decode_image;
    use ocelli::imgproc::Image;
    let (tmp, frames, photo) = coffee_frames("track");
    let dir = tmp.path();
    // The photo (its cup at 162..421 × 16..295) slides right 40 px a frame over a grey
    // 800×480 canvas for four frames; two empty frames follow. (Each frame costs 5 s under
    // emulation: as few as show a track confirmed, kept across a zone's border, then lost.)
    let (w, h) = (800, 480);
    for t in 0..6 {
        let mut canvas = Image::new(w, h, 3);
        canvas.data.fill(114);
        if t < 4 {
            for y in 0..photo.height {
                let src = &photo.data[y * photo.width * 3..][..photo.width * 3];
                canvas.data[((y + 40) * w + 40 * t) * 3..][..src.len()].copy_from_slice(src);
            }
        }
        ocelli::overlay::save_png(&canvas, &frames.join(format!("{t:02}.png"))).unwrap();
    }
    let (jsonl, snaps, fb) = (dir.join("out.jsonl"), dir.join("snaps"), dir.join("fb"));
    std::fs::write(&fb, b"").unwrap();
    // The cup's bottom centre (x = 291.5 + 40 t) crosses x = 381 between frames 2 and 3.
    let text = std::fs::read_to_string(yolox_config(dir, "", &frames))
        .unwrap()
        .replace(
            "[output]\n",
            "[track]\nmin_hits = 2\nmax_missed = 1\n\n[[track.zone]]\nname = \"right\"\n\
             polygon = [[381, 0], [800, 0], [800, 480], [381, 480]]\n\n[output]\n",
        )
        + &format!(
            "jsonl = {jsonl:?}\n\n[output.snapshots]\ndir = {snaps:?}\nmin_interval_s = 0\n\n\
             [output.framebuffer]\ndevice = {fb:?}\n\
             geometry = {{ width = 200, height = 120, bits_per_pixel = 16 }}\n"
        );
    let config = write(dir, "track.toml", &text);
    let out = ocelli(&["run", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = read_jsonl(&jsonl);
    assert_eq!(lines.len(), 6);
    let cup = |line: &serde_json::Value| {
        line["detections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["label"] == "cup")
            .cloned()
    };
    let ids: Vec<Option<u64>> = lines
        .iter()
        .map(|l| cup(l).and_then(|d| d["track_id"].as_u64()))
        .collect();
    let id = ids[1].unwrap_or_else(|| panic!("the cup is tracked from frame 1: {ids:?}"));
    assert_eq!(ids[0], None, "not confirmed on its first frame");
    assert_eq!(
        &ids[1..4],
        [Some(id); 3],
        "the same id on every frame: {ids:?}"
    );
    assert!(lines[4..].iter().all(|l| cup(l).is_none()));
    let cup_events: Vec<(usize, String)> = lines
        .iter()
        .enumerate()
        .flat_map(|(t, l)| {
            let events = l["events"].as_array().unwrap().clone();
            events
                .into_iter()
                .filter(|e| e["track_id"].as_u64() == Some(id))
                .map(move |e| (t, format!("{} {}", e["type"], e["zone"])))
        })
        .collect();
    let want = [
        (1, r#""enter" null"#),
        (3, r#""enter" "right""#),
        (5, r#""exit" "right""#),
        (5, r#""exit" null"#),
    ];
    assert_eq!(
        cup_events,
        want.map(|(t, e)| (t, e.to_string())),
        "{cup_events:?}"
    );
    // Snapshots of the frames with an `enter` event, annotated, full size.
    let mut shots: Vec<PathBuf> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    shots.sort();
    let entering = lines
        .iter()
        .filter(|l| {
            let events = l["events"].as_array().unwrap();
            events.iter().any(|e| e["type"] == "enter")
        })
        .count();
    assert_eq!(shots.len(), entering, "{shots:?}");
    let mut shot = Image::new(0, 0, 3);
    decode_image(&shots[0], ocelli::limits::DEFAULT_MAX_PIXELS, &mut shot).unwrap();
    assert_eq!((shot.width, shot.height), (w, h));
    // The framebuffer file holds the last frame, letterboxed to 200×120 at 16 bpp.
    assert_eq!(std::fs::metadata(&fb).unwrap().len(), 200 * 120 * 2);
}

#[test]
fn truncated_and_wrong_size_frames_are_dropped_and_counted_in_the_stream() {
    let tmp = scratch("bad-frames");
    let dir = tmp.path();
    let jsonl = dir.join("out.jsonl");
    let text = format!(
        "[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\nframes = 10\n\
         faults = [{{ after = 3, kind = \"truncated\" }}, {{ after = 6, kind = \"wrong_size\" }}]\n\n\
         [output]\njsonl = {jsonl:?}\n"
    );
    let config = write(dir, "config.toml", &text);
    let out = ocelli(&["run", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The run goes to the end of its input and says it dropped frames.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.matches("frame dropped").count(), 2, "{stderr}");
    assert!(
        stderr.contains("frame 3") && stderr.contains("frame 6"),
        "{stderr}"
    );
    let frames = read_jsonl(&jsonl);
    let seen: Vec<(u64, u64)> = frames
        .iter()
        .map(|f| {
            let id = f["frame_id"].as_u64().unwrap();
            (id, f["source_status"]["bad_frames"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        seen,
        [
            (0, 0),
            (1, 0),
            (2, 0),
            (4, 1),
            (5, 1),
            (7, 2),
            (8, 2),
            (9, 2)
        ],
        "frame ids and bad-frame counts"
    );
}

/// When SIGTERM arrives in the shutdown tests (each run's first frame is bad and dropped,
/// which must not change the exit status of a stopped service).
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// While frames run through a detector.
    Frame,
    /// While the socket writer is blocked on a client that never reads.
    ClientWrite,
    /// Before the first frame, while the models load.
    ModelLoad,
}

#[test]
fn sigterm_exits_0_within_2_s_and_removes_the_socket() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    let yunet = cached("yunet_n_320_320.onnx");
    let yolox = cached("yolox_nano.onnx");
    // Loading takes longer than the wait before SIGTERM with this one too, also under
    // emulation (where the two small ones alone came to load within it).
    let yolov8n = cached("yolov8n.onnx");
    for moment in [Moment::Frame, Moment::ClientWrite, Moment::ModelLoad] {
        let tmp = scratch(&format!("sigterm-{moment:?}"));
        let dir = tmp.path();
        let jsonl = dir.join("out.jsonl");
        let socket = dir.join("s.sock");
        let two = format!(
            "[[detector]]\nmodel = {yunet:?}\nfamily = \"yunet\"\nlabels = \"face\"\n\n\
             [[detector]]\nmodel = {yolox:?}\nfamily = \"yolox\"\n\n"
        );
        let (size, detectors) = match moment {
            // Small frames and no detector: lines come fast enough to fill the client's socket.
            Moment::ClientWrite => ("64\nheight = 48", String::new()),
            Moment::Frame => ("320\nheight = 240", two),
            Moment::ModelLoad => (
                "320\nheight = 240",
                format!(
                    "{two}[[detector]]\nmodel = {yolov8n:?}\nfamily = \"yolov8\"\n\
                     labels = \"coco\"\n\n"
                ),
            ),
        };
        let text = format!(
            "[source]\nkind = \"synthetic\"\nwidth = {size}\n\
             faults = [{{ after = 0, kind = \"truncated\" }}]\n\n{detectors}\
             [output]\njsonl = {jsonl:?}\nsocket = {{ path = {socket:?} }}\n"
        );
        let config = write(dir, "config.toml", &text);
        let mut child = run_logging_stderr(&config, &dir.join("stderr"));
        let pid = Pid::from_raw(child.id() as i32);
        let lines = || lines_in(&jsonl);
        // Held open, never read, until the process has exited.
        let mut _client = None;
        match moment {
            // The bad frame is dropped before the first line (a frame costs 6 s emulated).
            Moment::Frame => wait_for(60, "the first frame", || lines() >= 1),
            Moment::ClientWrite => {
                _client = Some(connect_when_listening(&socket));
                // Far more than the ring, the staging buffer and the socket buffer hold.
                let start = lines();
                wait_for(60, "lines the client cannot take", || {
                    lines() > start + 20_000
                });
            }
            Moment::ModelLoad => std::thread::sleep(Duration::from_millis(100) * slowdown()),
        }
        let t = Instant::now();
        kill(pid, Signal::SIGTERM).unwrap();
        let status = child.wait().unwrap();
        let took = t.elapsed();
        let log = std::fs::read_to_string(dir.join("stderr")).unwrap();
        assert!(status.success(), "{moment:?}: {status:?}: {log}");
        assert!(
            took < Duration::from_secs(2) * slowdown(),
            "{moment:?}: took {took:?}"
        );
        assert!(!socket.exists(), "{moment:?}: socket left behind");
        if let Moment::ModelLoad = moment {
            assert_eq!(lines(), 0, "SIGTERM came after the models had loaded");
        }
    }
}

#[test]
fn record_saves_one_frame_in_n_as_png_skips_bad_ones_and_never_overwrites() {
    let tmp = scratch("record");
    let dir = tmp.path();
    let config = write(
        dir,
        "config.toml",
        "[source]\nkind = \"synthetic\"\nwidth = 64\nheight = 48\nframes = 20\n\
         faults = [{ after = 3, kind = \"truncated\" }]\n",
    );
    let frames = dir.join("frames");
    let record = |n: &str| {
        let out = ocelli(&[
            "record",
            config.to_str().unwrap(),
            "--out",
            frames.to_str().unwrap(),
            "--frames",
            n,
            "--every",
            "3",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    };
    let stderr = record("4");
    assert!(
        stderr.contains("frame 3") && stderr.contains("skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("4 frame(s) saved"), "{stderr}");
    // A second recording into the same folder adds to it.
    record("2");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    let mut rgb = ocelli::imgproc::Image::new(0, 0, 3);
    for f in &files {
        assert_eq!(f.extension().unwrap(), "png", "{}", f.display());
        ocelli::capture::decode_image(f, ocelli::limits::DEFAULT_MAX_PIXELS, &mut rgb).unwrap();
        assert_eq!((rgb.width, rgb.height), (64, 48), "{}", f.display());
    }
    // Only one frame in three is kept: the first recording's ids are 3 apart or more.
    let id = |f: &PathBuf| -> u64 {
        let stem = f.file_stem().unwrap().to_str().unwrap();
        stem.rsplit('-').next().unwrap().parse().unwrap()
    };
    let first: Vec<u64> = files[..4].iter().map(id).collect();
    assert!(first.windows(2).all(|w| w[1] >= w[0] + 3), "{first:?}");
    // An output folder that cannot be made is one line naming it.
    let blocked = config.join("frames");
    let out = ocelli(&[
        "record",
        config.to_str().unwrap(),
        "--out",
        blocked.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["cannot create the output folder", "config.toml"]);
}

/// A greyscale PNG of `width`×`height` black pixels, one bit each: 20000×20000 is a small file.
/// `icc_bytes` of zeros go in as a colour profile, compressed.
fn black_png(path: &Path, width: u32, height: u32, icc_bytes: usize) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut info = png::Info::with_size(width, height);
    info.color_type = png::ColorType::Grayscale;
    info.bit_depth = png::BitDepth::One;
    info.icc_profile = (icc_bytes > 0).then(|| vec![0; icc_bytes].into());
    let mut encoder = png::Encoder::with_info(file, info).unwrap();
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder
        .write_header()
        .unwrap()
        .into_stream_writer()
        .unwrap();
    let row = vec![0u8; width.div_ceil(8) as usize];
    for _ in 0..height {
        std::io::Write::write_all(&mut writer, &row).unwrap();
    }
    writer.finish().unwrap();
}

/// The folder of the limited-memory test: the reference photos, one with a 256 MiB colour
/// profile, and three bad files. Returns the good photos' sizes and the bad files' names.
fn photos_and_bombs(dir: &Path) -> (Vec<(u64, u64)>, Vec<&'static str>) {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(cached("images")).unwrap() {
        let path = entry.unwrap().path();
        let mut rgb = ocelli::imgproc::Image::new(0, 0, 3);
        ocelli::capture::decode_image(&path, ocelli::limits::DEFAULT_MAX_PIXELS, &mut rgb).unwrap();
        sizes.push((rgb.width as u64, rgb.height as u64));
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    // A valid image whose colour profile inflates to 256 MiB: decoded, the profile skipped.
    black_png(&dir.join("good-icc-bomb.png"), 64, 48, 256 << 20);
    sizes.push((64, 48));
    black_png(&dir.join("bomb-20000.png"), 20000, 20000, 0);
    // A real JPEG whose frame header (SOF0) declares 65535×65535.
    let mut jpeg = std::fs::read(cached("images/rocket.jpg")).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xff; 4]);
    std::fs::write(dir.join("bomb-65535.jpg"), jpeg).unwrap();
    let png = std::fs::read(cached("images/coffee.png")).unwrap();
    std::fs::write(dir.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    (
        sizes,
        vec!["bomb-20000.png", "bomb-65535.jpg", "truncated.png"],
    )
}

/// Whether the preset at `path` is checked by this build: on the host every preset; under
/// emulation, where loading a preset's models takes 6-24 s, those whose board is of this
/// architecture (`[board] target`). A board of the other one is checked by its own build, the
/// host's demos (no target) on the host.
fn checked_here(path: &Path) -> bool {
    if !emulated() {
        return true;
    }
    let config: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let target = config["board"].get("target").and_then(|t| t.as_str());
    let here = target.is_some_and(|t| t.starts_with(std::env::consts::ARCH));
    if !here {
        eprintln!("{}: not a board of this architecture", path.display());
    }
    here
}

/// The memory README's board table states for a preset (`[board] memory_mb`).
fn preset_memory_mb(preset: &str) -> u64 {
    let text = std::fs::read_to_string(root().join(format!("board-configs/{preset}.toml")));
    let config: toml::Table = toml::from_str(&text.unwrap()).unwrap();
    config["board"]["memory_mb"].as_integer().unwrap() as u64
}

#[test]
fn the_rpi3_presets_refuse_image_bombs_by_name_within_their_memory_budget() {
    let tmp = scratch("bombs");
    let dir = tmp.path();
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    let (good, bad) = photos_and_bombs(&photos);
    let mut checked = 0;
    for preset in ["rpi3-armv7", "rpi3-aarch64"] {
        let path = root().join(format!("board-configs/{preset}.toml"));
        if !checked_here(&path) {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "\"../models/cache/",
            &format!("\"{}/", cached("").display()),
        );
        // The preset's board and detectors; photos instead of its camera, a file for its socket.
        let keep = text
            .split("\n[")
            .filter(|s| s.starts_with("board]") || s.starts_with("[detector]]"))
            .collect::<Vec<_>>()
            .join("\n[");
        let jsonl = dir.join(format!("{preset}.jsonl"));
        let config = write(
            dir,
            &format!("{preset}.toml"),
            &format!(
                "[{keep}\n[source]\nkind = \"images\"\npath = {photos:?}\nloop = true\n\n\
                 [output]\njsonl = {jsonl:?}\n"
            ),
        );
        let limit_mb = preset_memory_mb(preset);
        let stderr_path = dir.join(format!("{preset}.stderr"));
        let mut child = if emulated() {
            // The limit would bound the emulator, not Ocelli: the run is checked without it.
            eprintln!("{preset}: under emulation, run without a memory limit");
            run_logging_stderr(&config, &stderr_path)
        } else {
            // RLIMIT_DATA counts the heap and private mappings as they are made writable, not
            // the address space glibc's arenas and tract's threads reserve (ulimit -v does).
            Running(
                std::process::Command::new("sh")
                    .args(["-c", "ulimit -d $0 && exec \"$1\" run \"$2\""])
                    .arg((limit_mb * 1024).to_string())
                    .arg(env!("CARGO_BIN_EXE_ocelli"))
                    .arg(&config)
                    .stderr(std::fs::File::create(&stderr_path).unwrap())
                    .spawn()
                    .unwrap(),
            )
        };
        let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
        // Round `rounds + 1` has begun once a good photo is seen `rounds * good + 1` times.
        // The peak RSS is read after two rounds, every buffer grown to the largest photo; under
        // emulation, where no limit or peak is measured and a round costs 10-15 s, one round
        // shows every refusal and every good photo.
        let rounds = if emulated() { 1 } else { 2 };
        wait_for(
            120,
            &format!("{preset}: {rounds} round(s) of the folder"),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "{preset}: exited with {status} under {limit_mb} MB: {}",
                        stderr()
                    );
                }
                lines_in(&jsonl) > rounds * good.len()
            },
        );
        let peak_kb = (!emulated()).then(|| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
            let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
            hwm.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let stderr = stderr();
        assert!(!stderr.contains("panicked"), "{preset}: {stderr}");
        let frames = read_jsonl(&jsonl);
        let mut seen: Vec<(u64, u64)> = frames
            .iter()
            .filter(|f| f["type"] == "frame")
            .map(|f| (f["width"].as_u64().unwrap(), f["height"].as_u64().unwrap()))
            .collect();
        seen.sort();
        seen.dedup();
        let mut want = good.clone();
        want.sort();
        want.dedup();
        assert_eq!(seen, want, "{preset}: the good photos' sizes");
        for name in &bad {
            let line = stderr.lines().find(|l| l.contains(name));
            assert!(line.is_some(), "{preset}: {name} not refused: {stderr}");
        }
        assert!(
            stderr.contains("20000x20000 is over the bound of 67108864 pixels")
                && stderr.contains("65535x65535 is over the bound"),
            "{preset}: {stderr}"
        );
        if let Some(kb) = peak_kb {
            eprintln!("{preset}: peak RSS {kb} kB, limit {limit_mb} MB");
            assert!(kb < limit_mb * 1024, "{preset}: peak RSS {kb} kB");
        }
    }
    assert!(checked > 0, "no preset of this architecture");
}

/// A client of the Unix socket at `path`: its file appears at bind, a moment before the
/// server listens, so a connect in between is refused.
fn connect_when_listening(path: &Path) -> std::os::unix::net::UnixStream {
    let mut client = None;
    wait_for(30, "the socket to accept", || {
        client = std::os::unix::net::UnixStream::connect(path).ok();
        client.is_some()
    });
    client.unwrap()
}
