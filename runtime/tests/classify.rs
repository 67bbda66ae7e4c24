//! Second-stage classifiers against onnxruntime with their authors' preprocessing: PP-OCR's
//! text orientation classifier on crops of page.png's lines (upright and turned), and an
//! embedding model matched against a gallery; plus the refusals of a bad classifier.
//!
//! Generate the fixtures from the repository root with
//! `python3 tests/reference/classify.py target/fixtures/classify`.

use std::path::{Path, PathBuf};

use ocelli::capture::decode_image;
use ocelli::detect::BBox;
use ocelli::detect::classify::{Classifier, ClassifierConfig, ClassifyError, TopK};
use ocelli::imgproc::Image;
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures/classify");
const CACHE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/cache");
/// The pad: RapidOCR pads with 0 after normalising, the runtime before (127 of 0..255).
const SCORE_TOLERANCE: f32 = 0.01;

fn fixture(path: &str) -> Value {
    let path = Path::new(FIXTURES).join(path);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nGenerate the fixtures from the repository root with \
             `python3 tests/reference/classify.py target/fixtures/classify`",
            path.display()
        )
    });
    serde_json::from_slice(&bytes).unwrap()
}

fn photo(name: &str) -> Image {
    let path = Path::new(CACHE).join("images").join(name);
    let mut rgb = Image::new(0, 0, 3);
    decode_image(&path, ocelli::limits::DEFAULT_MAX_PIXELS, &mut rgb).unwrap();
    rgb
}

fn bbox(v: &Value) -> BBox {
    let n = |i: usize| v[i].as_f64().unwrap() as f32;
    BBox {
        x1: n(0),
        y1: n(1),
        x2: n(2),
        y2: n(3),
    }
}

/// A classifier from its `[[classifier]]` table, paths resolved against `base`.
fn load(toml_text: &str, base: &Path) -> Result<Classifier, ClassifyError> {
    let cfg: ClassifierConfig = toml::from_str(toml_text).unwrap();
    Classifier::load(&cfg, |p| base.join(p))
}

fn orientation_classifier() -> Classifier {
    let margin = fixture("ocr_cls/cases.json")["margin"].as_f64().unwrap();
    let labels = tempfile::Builder::new()
        .prefix("ocelli-orient-")
        .suffix(".txt")
        .tempfile()
        .unwrap()
        .into_temp_path();
    std::fs::write(&labels, "0\n180\n").unwrap();
    let text = format!(
        "model = \"ch_ppocr_mobile_v2.0_cls_infer.onnx\"\nlabels = {labels:?}\n\
         margin = {margin}\ntop_k = 2\ninput_size = [192, 48]\n\
         preprocess = {{ resize = \"height\", pad_value = 127, channels = \"bgr\", \
         mean = [127.5, 127.5, 127.5], std = [127.5, 127.5, 127.5] }}\n"
    );
    load(&text, Path::new(CACHE)).unwrap()
}

/// The photo turned by 180 degrees: its pixels in reverse order.
fn turned(img: &Image) -> Image {
    let mut out = img.clone();
    for (dst, src) in out
        .data
        .chunks_exact_mut(3)
        .zip(img.data.chunks_exact(3).rev())
    {
        dst.copy_from_slice(src);
    }
    out
}

#[test]
fn text_orientation_matches_rapidocr_on_onnxruntime() {
    let mut classifier = orientation_classifier();
    assert_eq!(classifier.labels, ["0", "180"]);
    let page = photo("page.png");
    let page_turned = turned(&page);
    let mut top = TopK::new();
    let cases = fixture("ocr_cls/cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let image = match case["turned"].as_bool().unwrap() {
            true => &page_turned,
            false => &page,
        };
        classifier
            .classify(image, &bbox(&case["box"]), &mut top)
            .unwrap();
        assert_eq!(top.len(), 2, "{case}");
        for &(label, score) in &top {
            let want = case["probs"][usize::from(label)].as_f64().unwrap() as f32;
            assert!(
                (score - want).abs() <= SCORE_TOLERANCE,
                "{case}: label {label} scores {score}, onnxruntime {want}"
            );
        }
    }
}

#[test]
fn embeddings_find_their_nearest_gallery_label() {
    let dir = PathBuf::from(FIXTURES).join("embed");
    let mut classifier = load(
        "model = \"model.onnx\"\ngallery = \"gallery.json\"\nmargin = 0.0\ntop_k = 3\n\
         preprocess = { resize = \"stretch\", std = [255.0, 255.0, 255.0] }\n",
        &dir,
    )
    .unwrap();
    let mut top = TopK::new();
    let cases = fixture("embed/cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let image = photo(case["image"].as_str().unwrap());
        classifier
            .classify(&image, &bbox(&case["box"]), &mut top)
            .unwrap();
        assert_eq!(top.len(), 3, "{case}");
        let (best, _) = top[0];
        assert_eq!(
            format!("{}.png", classifier.labels[usize::from(best)]),
            case["image"].as_str().unwrap()
        );
        for &(label, score) in &top {
            let name = &classifier.labels[usize::from(label)];
            let want = case["similarity"][name].as_f64().unwrap() as f32;
            assert!(
                (score - want).abs() <= SCORE_TOLERANCE,
                "{case}: {name} at {score}, numpy {want}"
            );
        }
    }
}

fn refusal(text: &str, base: &Path) -> String {
    let err = load(text, base).err().expect("refused").to_string();
    assert!(!err.contains('\n'), "{err}");
    err
}

#[test]
fn a_classifier_whose_output_is_not_scores_or_an_embedding_is_refused() {
    let err = refusal(
        "model = \"arch/yolov8n_320.onnx\"\nlabels = \"coco\"\n",
        Path::new(CACHE),
    );
    assert!(
        err.contains("yolov8n_320.onnx") && err.contains("[1,C]") && err.contains("[1, 84, 2100]"),
        "{err}"
    );
}

#[test]
fn a_gallery_of_another_dimension_is_refused_by_entry() {
    let dir = tempfile::Builder::new()
        .prefix("ocelli-gallery-")
        .tempdir()
        .unwrap();
    let model = PathBuf::from(FIXTURES).join("embed/model.onnx");
    let gallery = dir.path().join("gallery.json");
    std::fs::write(
        &gallery,
        r#"{"entries": [{"label": "a", "embedding": [1, 0, 0]}]}"#,
    )
    .unwrap();
    let text = format!("model = {model:?}\ngallery = \"gallery.json\"\n");
    let err = refusal(&text, dir.path());
    assert!(
        err.contains("gallery.json") && err.contains("entries[0].embedding") && err.contains("32"),
        "{err}"
    );
    std::fs::write(&gallery, "not json").unwrap();
    let err = refusal(&text, dir.path());
    assert!(
        err.contains("gallery.json") && err.contains("entries"),
        "{err}"
    );
}

#[test]
fn labels_that_do_not_count_the_classes_are_refused() {
    let err = refusal(
        "model = \"ch_ppocr_mobile_v2.0_cls_infer.onnx\"\nlabels = \"coco\"\n\
         input_size = [192, 48]\n",
        Path::new(CACHE),
    );
    assert!(
        err.contains("ch_ppocr_mobile_v2.0_cls_infer.onnx") && err.contains("2 classes"),
        "{err}"
    );
}
