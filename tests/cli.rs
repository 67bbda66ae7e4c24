//! End-to-end: the `ocelli` binary on real models, real photos and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    let bin = env!("CARGO_BIN_EXE_ocelli");
    // Cross-built, the binary is foreign to the host: start it through the emulator that runs
    // this test (cross/qemu-user.sh names itself here).
    let mut command = match std::env::var_os("OCELLI_TEST_RUNNER") {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command.args(args).output().expect("ocelli runs")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ocelli-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
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
    let dir = scratch("demo");
    // The demo config, with its outputs moved to a scratch folder.
    let demo = std::fs::read_to_string(root().join("board-configs/host-demo.toml")).unwrap();
    let demo = demo
        .replace(
            "../models/cache",
            root().join("models/cache").to_str().unwrap(),
        )
        .replace("../out/demo", dir.join("annotated").to_str().unwrap())
        .replace("../out/ocelli.sock", dir.join("s.sock").to_str().unwrap());
    let config = write(&dir, "demo.toml", &demo);
    for photo in ["astronaut.png", "chelsea.png", "coffee.png"] {
        cached(&format!("images/{photo}"));
    }
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
    for photo in ["astronaut", "chelsea", "coffee"] {
        let png = dir.join("annotated").join(format!("{photo}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", png.display());
    }
    assert!(!dir.join("s.sock").exists(), "socket file left behind");
}

#[test]
fn truncated_onnx_is_refused_with_one_line() {
    let dir = scratch("truncated");
    let bytes = std::fs::read(cached("yolox_nano.onnx")).unwrap();
    let model = dir.join("yolox_truncated.onnx");
    std::fs::write(&model, &bytes[..bytes.len() / 3]).unwrap();
    assert_one_line_error(
        &ocelli(&["inspect", model.to_str().unwrap()]),
        &["yolox_truncated.onnx"],
    );
    let config = yolox_config(&dir, "", &cached("images/coffee.png"))
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
    let dir = scratch("notpng");
    let fake = write(&dir, "photo.png", "this is text, not an image\n");
    let config = yolox_config(&dir, "", &fake);
    let out = ocelli(&["run", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["photo.png", "not a valid PNG"]);
}

#[test]
fn a_misspelt_config_key_is_refused_with_its_line() {
    let dir = scratch("misspelt");
    let config = yolox_config(
        &dir,
        "decode = { treshold = 0.5 }\n",
        &cached("images/coffee.png"),
    );
    let out = ocelli(&["check-config", config.to_str().unwrap()]);
    assert_one_line_error(&out, &["config.toml:9:", "treshold", "score_threshold"]);
}

#[test]
fn a_wrong_checksum_is_refused_with_both_sums() {
    let dir = scratch("sha");
    let zeros = "0".repeat(64);
    let config = yolox_config(
        &dir,
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
    let dir = scratch("family");
    let config = yolox_config(&dir, "", &cached("images/coffee.png"));
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
fn inspect_recognises_each_reference_family() {
    for (model, family) in [
        ("yolox_nano.onnx", "yolox"),
        ("nanodet_m_320.onnx", "nanodet"),
        ("yunet_n_320_320.onnx", "yunet"),
        ("ultraface_version-RFB-320.onnx", "ssd"),
        ("arch/yolov8n_320.onnx", "yolov8"),
        ("arch/yolov10n-e2e_320.onnx", "yolov10"),
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
fn every_board_preset_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("board-configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
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
