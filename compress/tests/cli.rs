//! The binary on bad input: one line on stderr, a failing exit status, no output file; and
//! update bundles end to end (`bundle`).

use std::path::{Path, PathBuf};
use std::process::Command;

use ocelli_compress::onnx::{Model, float_unshaped, float_value, node};
use tempfile::TempDir;

mod bundle;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn cached(name: &str) -> PathBuf {
    let p = Path::new(ROOT).join("models/cache").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `models/fetch.sh`",
        p.display()
    );
    p
}

/// A fresh folder, removed with everything in it when the guard is dropped.
fn scratch(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-compress-cli-{tag}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn bad_input_fails_with_one_line() {
    let tmp = scratch("bad");
    let not_onnx = cached("images/coffee.png");
    let truncated = tmp.path().join("truncated.onnx");
    let bytes = std::fs::read(cached("yunet_n_320_320.onnx")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("a.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let yunet = cached("yunet_n_320_320.onnx");
    let out = tmp.path().join("out.onnx");
    // Valid ONNX that tract cannot load: an operator nobody implements.
    let unknown = tmp.path().join("unknown_op.onnx");
    Model::build(
        13,
        vec![node("NoSuchOperator", "n", &["x"], &["y"])],
        vec![float_value("x", &[Some(1), Some(3), Some(8), Some(8)])],
        vec![float_unshaped("y")],
        vec![],
    )
    .save(&unknown)
    .unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let ultraface = cached("ultraface_version-slim-320.onnx");
    let short = tmp.path().join("short.f32");
    std::fs::write(&short, [0u8; 12]).unwrap();
    let hidden = tmp.path().join("my_detector.onnx");
    std::fs::copy(&yunet, &hidden).unwrap();
    let rpi5 = Path::new(ROOT).join("board-configs/rpi5.toml");
    let quantize_hidden: Vec<String> = vec![
        "quantize".into(),
        s(&hidden),
        s(&out),
        "--calib".into(),
        s(&empty),
    ];
    // YuNet against itself on the folder whose image does not decode.
    let eval_broken = |extra: &[&str]| -> Vec<String> {
        let args = ["eval", "--reference", &s(&yunet), "--candidate", &s(&yunet)];
        let images = ["--images", &s(&broken)];
        args.iter()
            .chain(&images)
            .chain(extra)
            .map(|a| a.to_string())
            .collect()
    };
    let cases: [(&str, Vec<String>, &str); 11] = [
        (
            "raw input of the wrong size",
            vec!["time".into(), "--input".into(), s(&short), s(&yunet)],
            "expected 307200 little-endian f32 values (input [1, 3, 320, 320]): the file holds 12 bytes",
        ),
        (
            "a model no preset matches, without a config",
            quantize_hidden.clone(),
            "give the device's config with --config",
        ),
        (
            "a detector the config does not have",
            [
                quantize_hidden,
                vec![
                    "--config".into(),
                    s(&rpi5),
                    "--detector".into(),
                    "nope".into(),
                ],
            ]
            .concat(),
            "rpi5.toml: detector.name: no detector named nope; pass --detector with one of: objects, faces",
        ),
        (
            "models that take different inputs, timed together",
            vec!["time".into(), s(&yunet), s(&ultraface)],
            "the first model's is [1, 3, 320, 320]",
        ),
        (
            "unknown operator",
            vec!["optimize".into(), s(&unknown), s(&out)],
            "tract cannot load",
        ),
        ("undecodable evaluation image", eval_broken(&[]), "a.png"),
        (
            "no timed round, whose latency ratio the card could not record",
            eval_broken(&["--rounds", "0"]),
            "--rounds",
        ),
        (
            "not ONNX",
            vec!["optimize".into(), s(&not_onnx), s(&out)],
            "not an ONNX model",
        ),
        (
            "truncated",
            vec!["optimize".into(), s(&truncated), s(&out)],
            "truncated.onnx",
        ),
        (
            "empty calibration folder",
            vec![
                "quantize".into(),
                s(&yunet),
                s(&out),
                "--calib".into(),
                s(&empty),
            ],
            "no PNG or JPEG",
        ),
        (
            "undecodable image",
            vec![
                "quantize".into(),
                s(&yunet),
                s(&out),
                "--calib".into(),
                s(&broken),
            ],
            "a.png",
        ),
    ];
    for (name, args, expected) in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_ocelli-compress"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(!o.status.success(), "{name}: succeeded");
        assert_eq!(errors.len(), 1, "{name}: {stderr}");
        assert!(errors[0].contains(expected), "{name}: {}", errors[0]);
        assert!(!out.exists(), "{name}: wrote an output");
    }
}

/// `time --serve` runs the plan each stdin line names (models in order, each at every thread
/// count), answers with its milliseconds, and refuses an index it does not have.
#[test]
fn time_serve_answers_each_request() {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocelli-compress"))
        .args(["time", "--serve", "--threads", "1,2"])
        .arg(cached("yunet_n_320_320.onnx"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready 2");
    for i in [1, 0] {
        writeln!(stdin, "{i}").unwrap();
        line.clear();
        stdout.read_line(&mut line).unwrap();
        let ms: f64 = line.trim().parse().unwrap();
        assert!(ms > 0.0, "plan {i}: {ms} ms");
    }
    writeln!(stdin, "2").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("expected a plan index below 2, got \"2\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every model written gets `NAME.card.json` naming its own and its source's sha256, the
/// command and its options, and the calibration images; `eval` adds its summary, and refuses a
/// card that names another file than the model beside it.
#[test]
fn every_written_model_gets_a_card_and_eval_adds_its_summary() {
    use ocelli::model::card::{Card, SCHEMA, sha256_hex};
    let tmp = scratch("card");
    let yunet = cached("yunet_n_320_320.onnx");
    let fixtures = Path::new(ROOT).join("target/fixtures/compress");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |args: &[String]| {
        let o = Command::new(env!("CARGO_BIN_EXE_ocelli-compress"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let sha = |p: &Path| sha256_hex(&std::fs::read(p).unwrap());
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("docs/schema/card.schema.json")).unwrap(),
    )
    .unwrap();
    let schema = jsonschema::draft202012::new(&schema).unwrap();
    let card = |p: &Path| {
        let path = Card::path_for(p);
        let json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = schema.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        Card::load(&path).unwrap()
    };

    let opt = tmp.path().join("yunet.opt.onnx");
    let (ok, log) = run(&["optimize".into(), s(&yunet), s(&opt)]);
    assert!(ok, "{log}");
    let c = card(&opt);
    assert_eq!(c.schema, SCHEMA);
    assert_eq!((c.model.sha256, c.source.sha256), (sha(&opt), sha(&yunet)));
    assert_eq!(c.model.path, Path::new("yunet.opt.onnx"));
    assert_eq!(c.command[1..3], ["optimize".to_string(), s(&yunet)]);
    assert_eq!(c.options["optimize"]["tolerance"], 1e-4_f32 as f64);
    assert!(c.calibration.is_none() && c.eval.is_none());

    // The layers' speeds from a table: their shapes from the model, their times set so that
    // timings taken beside the other tests do not decide the forms. Float the faster: every
    // layer keeps int8 weights with float arithmetic, whatever the accuracy check finds.
    let model = ocelli::model::onnx::Model::load(&yunet).unwrap();
    let shape = model.input_shape(None).unwrap();
    let mut table = ocelli::model::layers::profile(&[(model, shape)], 1, 1, |_| {}).unwrap();
    for layer in &mut table.layers {
        layer.times = ocelli::model::layers::LayerTimes {
            float_ms: 0.5,
            int8_ms: 1.0,
            int8_median_faster: false,
        };
    }
    let timings = tmp.path().join("layers.json");
    std::fs::write(&timings, serde_json::to_string(&table).unwrap()).unwrap();
    let int8 = tmp.path().join("yunet.int8.onnx");
    let calib = fixtures.join("calib");
    let (ok, log) = run(&[
        "quantize".into(),
        s(&yunet),
        s(&int8),
        "--calib".into(),
        s(&calib),
        "--layer-timings".into(),
        s(&timings),
    ]);
    assert!(ok, "{log}");
    let c = card(&int8);
    let cal = c.calibration.expect("calibration images");
    assert_eq!((cal.path, cal.files), (calib.clone(), 25));
    assert_eq!(c.options["quantize"]["layer_timings"], s(&timings));

    let images = fixtures.join("eval");
    let eval = || {
        run(&[
            "eval".into(),
            "--reference".into(),
            s(&yunet),
            "--candidate".into(),
            s(&int8),
            "--images".into(),
            s(&images),
            "--rounds".into(),
            "1".into(),
        ])
    };
    let (ok, log) = eval();
    assert!(ok, "{log}");
    let e = card(&int8).eval.expect("an eval summary");
    assert_eq!(e.reference.sha256, sha(&yunet));
    assert_eq!(e.images.files, std::fs::read_dir(&images).unwrap().count());
    assert!(e.map50 >= 0.9 && e.size_ratio < 0.5, "{e:?}");

    // The model replaced, its card left behind.
    std::fs::copy(&opt, &int8).unwrap();
    let (ok, log) = eval();
    let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!ok && errors.len() == 1, "{log}");
    assert!(
        errors[0].contains("yunet.int8.card.json: model.sha256"),
        "{}",
        errors[0]
    );
}
