//! `quantize --layer-timings`: a table from `ocelli profile-layers` decides each layer's form,
//! a table from another board's CPU is set aside with a warning, a malformed one is refused.

use std::path::{Path, PathBuf};

use ocelli::model::layers::{self, Cpu, Form, Table};
use ocelli_compress::data::Setup;
use ocelli_compress::onnx::Model;
use ocelli_compress::{Error, quantize};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn root(rel: &str) -> PathBuf {
    let p = Path::new(ROOT).join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `just fixtures` first",
        p.display()
    );
    p
}

/// A fresh folder, removed with everything in it when the guard is dropped.
fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-compress-timings-{tag}-"))
        .tempdir()
        .unwrap()
}

fn write_table(dir: &Path, table: &Table) -> PathBuf {
    let p = dir.join("layers.json");
    std::fs::write(&p, serde_json::to_string(table).unwrap()).unwrap();
    p
}

fn with_config(file: &str) -> Setup {
    Setup {
        config: Some(root(file)),
        ..Default::default()
    }
}

/// The shapes of YuNet timed here, then given int8 times ten times float's: quantize must take
/// the table's times for every layer and so never choose ConvInteger, timing nothing itself.
#[test]
fn a_board_table_decides_every_layers_form_and_the_report_names_it() {
    let path = root("models/cache/yunet_n_320_320.onnx");
    let model = Model::load(&path).unwrap();
    let shape = model.input_shape(None).unwrap();
    let mut table = layers::profile(&[(model.clone(), shape)], 1, 1, |_| {}).unwrap();
    for t in &mut table.layers {
        t.times.int8_ms = 10.0 * t.times.float_ms;
        t.times.int8_median_faster = false;
    }
    let dir = scratch("decides");
    let file = write_table(dir.path(), &table);
    let timings = quantize::BoardTimings::load(&file, &Setup::default(), |w| panic!("{w}"))
        .unwrap()
        .expect("no board to disagree with");
    let opts = quantize::Options {
        timings: Some(timings),
        ..Default::default()
    };
    let mut heard = Vec::new();
    let (_, report) = quantize::quantize(
        &model,
        &root("target/fixtures/compress/calib"),
        &opts,
        |m| heard.push(m.to_string()),
    )
    .unwrap();
    let used = report.timings.as_ref().expect("the table is reported");
    assert_eq!(used.path, file);
    assert_eq!(used.cpu, Cpu::this());
    assert_eq!(
        (used.from_table, used.timed_here),
        (table.layers.len(), 0),
        "every distinct shape comes from the table"
    );
    assert!(
        !heard.iter().any(|m| m.contains("timing layer")),
        "{heard:?}"
    );
    for l in &report.layers {
        // Ten times, as written; JSON keeps 17 significant digits.
        let ratio = l.int8_ms / l.float_ms;
        assert!((ratio - 10.0).abs() < 1e-9, "{}: {ratio}", l.output);
    }
    assert_eq!(report.count(Form::ConvInteger), 0);
}

#[test]
fn a_table_from_another_cpu_than_the_boards_is_set_aside_with_a_warning() {
    let dir = scratch("other-cpu");
    let a53 = Table {
        cpu: Cpu {
            arch: "aarch64".into(),
            kind: Some("CortexA53".into()),
            features: vec![],
        },
        threads: 4,
        layers: vec![],
    };
    let file = write_table(dir.path(), &a53);
    // rpi4.toml: aarch64, tract_cpu = "cortex_a72".
    let mut warning = None;
    let got = quantize::BoardTimings::load(&file, &with_config("board-configs/rpi4.toml"), |w| {
        warning = Some(w.to_string())
    })
    .unwrap();
    assert!(got.is_none(), "the layers are timed on this host instead");
    let warning = warning.expect("a warning");
    for needle in [
        file.to_str().unwrap(),
        "CortexA53",
        "cortex_a72",
        "rpi4.toml",
        "this host",
    ] {
        assert!(warning.contains(needle), "{warning:?} lacks {needle:?}");
    }
    // rpi3-aarch64.toml names the same core, spelt as the config spells it.
    let got = quantize::BoardTimings::load(
        &file,
        &with_config("board-configs/rpi3-aarch64.toml"),
        |w| panic!("{w}"),
    )
    .unwrap();
    assert_eq!(got.expect("the same CPU").table, a53);
}

#[test]
fn a_malformed_table_is_one_line_naming_the_file_and_field() {
    let dir = scratch("malformed");
    let file = dir.path().join("layers.json");
    let shape = r#"{"weight":[8,3,3,3],"input":[1,3,32,32],"strides":[1,1],"pads":[1,1,1,1],"dilations":[1,1],"group":1}"#;
    let cpu = r#"{"arch":"aarch64","kind":null,"features":[]}"#;
    for (times, field) in [
        (r#"{"int8_ms":1.0,"int8_median_faster":true}"#, "float_ms"),
        (
            r#"{"float_ms":1.0,"int8_ms":-2.0,"int8_median_faster":true}"#,
            "layers[0].times.int8_ms",
        ),
        (
            r#"{"float_ms":1.0,"int8_ms":1.0,"int8_median_faster":true,"fp16_ms":1.0}"#,
            "fp16_ms",
        ),
    ] {
        std::fs::write(
            &file,
            format!(
                r#"{{"cpu":{cpu},"threads":1,"layers":[{{"shape":{shape},"times":{times}}}]}}"#
            ),
        )
        .unwrap();
        let e = quantize::BoardTimings::load(&file, &Setup::default(), |_| {}).unwrap_err();
        assert!(matches!(e, Error::Timings(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(file.to_str().unwrap()) && msg.contains(field) && !msg.contains('\n'),
            "{msg}"
        );
    }
}
