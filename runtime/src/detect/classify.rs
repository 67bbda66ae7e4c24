//! Second-stage classifiers: a model run on the crop of a detection, as DeepStream's secondary
//! inference (a vehicle's make after the vehicle, a face's attributes after the face, a text
//! line's orientation after the line).
//!
//! Two families: class scores `[1, C]` (MobileNet, EfficientNet, ViT, PP-OCR's orientation
//! classifier), and embeddings `[1, D]` matched by cosine similarity against a gallery of
//! labelled embeddings (re-identification, face recognition).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

use super::BBox;
use super::labels::Labels;
use super::model::{
    DetectError, load_err, load_plan_from_bytes, model_name, read_model, running_model,
};
use crate::imgproc::Image;
use crate::imgproc::geometry::Preprocess;

/// Most labels a classifier gives each detection.
pub const MAX_TOP_K: usize = 5;

/// Most gallery entries: the nearest-neighbour search is linear.
pub const MAX_GALLERY: usize = 10_000;

/// A classifier's best labels for one crop: label index (into [`Classifier::labels`]) and score.
pub type TopK = heapless::Vec<(u16, f32), MAX_TOP_K>;

/// How a `[1, C]` output becomes class scores.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scores {
    /// Already probabilities (a softmax inside the model).
    #[default]
    Probabilities,
    /// Logits of exclusive classes.
    Softmax,
    /// Logits of independent attributes.
    Sigmoid,
}

/// One `[[classifier]]` of the config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The name detections carry the labels under; defaults to the model's file stem.
    #[serde(default)]
    pub name: Option<String>,
    pub model: PathBuf,
    /// `coco`, `face`, `text` or a labels file, for class scores; unused with a gallery.
    #[serde(default)]
    pub labels: Option<String>,
    /// A gallery of labelled embeddings: the model's output is an embedding.
    #[serde(default)]
    pub gallery: Option<PathBuf>,
    /// The detectors' labels whose detections are classified; empty means all.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Each side of a box grows by this fraction of its width or height before cropping.
    #[serde(default = "default_margin")]
    pub margin: f32,
    /// Labels kept per detection, best first.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Crops classified per frame, best-scored detections first; the rest are counted.
    #[serde(default = "default_max_crops")]
    pub max_crops: usize,
    #[serde(default)]
    pub scores: Scores,
    #[serde(default)]
    pub input_size: Option<[usize; 2]>,
    #[serde(default)]
    pub preprocess: crate::config::PreprocessConfig,
}

fn default_margin() -> f32 {
    0.1
}

fn default_top_k() -> usize {
    1
}

fn default_max_crops() -> usize {
    8
}

/// Why a classifier cannot be loaded: each names the file and the field to fix.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Model(#[from] DetectError),
    #[error(transparent)]
    Labels(#[from] super::labels::LabelsError),
    /// The model's output is not one `[1, C]` or `[1, D]` tensor: a classifier gives one score
    /// per class, or one embedding, per crop. Export the model with its head.
    #[error("{path}: output {found}, expected one [1,C] class scores or [1,D] embedding")]
    Output { path: PathBuf, found: String },
    /// A setting is out of range; the message says which and why.
    #[error("classifier `{name}`: {field}: {reason}")]
    Config {
        name: String,
        field: &'static str,
        reason: String,
    },
    /// The labels and the model disagree on the class count.
    #[error("{path}: the model scores {classes} classes but labels `{labels}` name {named}")]
    ClassCount {
        path: PathBuf,
        classes: usize,
        labels: String,
        named: usize,
    },
    /// The gallery file is unreadable, not JSON of the documented shape, or its embeddings do
    /// not have the model's dimension.
    #[error("{path}: {what}")]
    Gallery { path: PathBuf, what: String },
}

/// `{"entries": [{"label": "...", "embedding": [D floats]}, ...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GalleryFile {
    entries: Vec<GalleryEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GalleryEntry {
    label: String,
    embedding: Vec<f32>,
}

/// Labelled unit embeddings, row-major.
struct Gallery {
    /// Label index of each row.
    labels: Vec<u16>,
    rows: Vec<f32>,
}

/// Scales `v` to unit length (a zero vector stays zero).
fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl Gallery {
    /// Reads the gallery; its distinct labels, in order of first appearance, go to `names`.
    fn load(path: &Path, dim: usize, names: &mut Vec<String>) -> Result<Self, ClassifyError> {
        let err = |what: String| ClassifyError::Gallery {
            path: path.into(),
            what,
        };
        let bytes = crate::limits::read_bounded(path, crate::limits::MAX_GALLERY_BYTES)
            .map_err(|e| err(e.to_string()))?;
        let file: GalleryFile = serde_json::from_slice(&bytes).map_err(|e| {
            err(format!(
                "{e}; expected {{\"entries\": [{{\"label\": ..., \"embedding\": [...]}}]}}"
            ))
        })?;
        if file.entries.is_empty() || file.entries.len() > MAX_GALLERY {
            return Err(err(format!(
                "entries: {} given, 1 to {MAX_GALLERY} expected",
                file.entries.len()
            )));
        }
        let mut gallery = Gallery {
            labels: Vec::with_capacity(file.entries.len()),
            rows: Vec::with_capacity(file.entries.len() * dim),
        };
        for (i, e) in file.entries.into_iter().enumerate() {
            if e.embedding.len() != dim || !e.embedding.iter().all(|x| x.is_finite()) {
                return Err(err(format!(
                    "entries[{i}].embedding: {} values, expected {dim} finite values (the \
                     model's embedding dimension)",
                    e.embedding.len()
                )));
            }
            let id = match names.iter().position(|n| *n == e.label) {
                Some(id) => id,
                None => {
                    names.push(e.label);
                    names.len() - 1
                }
            };
            gallery.labels.push(id as u16);
            let start = gallery.rows.len();
            gallery.rows.extend_from_slice(&e.embedding);
            normalise(&mut gallery.rows[start..]);
        }
        Ok(gallery)
    }
}

enum Head {
    Scores(Scores),
    /// Cosine similarity to the gallery; `best` holds each label's best similarity.
    Embedding {
        gallery: Gallery,
        best: Vec<f32>,
    },
}

/// A loaded classifier with its buffers: classifying a crop does not allocate once they have
/// grown to the crops' sizes.
pub struct Classifier {
    pub name: String,
    /// The model file, its sha256 and card, as the stream's `models` line names them.
    pub model: crate::emit::RunningModel,
    /// What each label index means.
    pub labels: Vec<String>,
    /// The detectors' labels this classifier applies to (empty: all).
    pub classes: Vec<String>,
    pub max_crops: usize,
    margin: f32,
    top_k: usize,
    head: Head,
    preprocess: Preprocess,
    state: SimpleState<TypedFact, Box<dyn TypedOp>>,
    crop: Image,
    /// The output as scores (or the embedding), per crop.
    values: Vec<f32>,
}

impl Classifier {
    pub fn load(
        cfg: &ClassifierConfig,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<Self, ClassifyError> {
        let path = resolve(&cfg.model);
        let name = model_name(cfg.name.as_deref(), &path);
        let bad = |field, reason: String| ClassifyError::Config {
            name: name.clone(),
            field,
            reason,
        };
        if !(0.0..=1.0).contains(&cfg.margin) {
            return Err(bad("margin", format!("{} is not within 0..=1", cfg.margin)));
        }
        if !(1..=MAX_TOP_K).contains(&cfg.top_k) {
            return Err(bad(
                "top_k",
                format!("{} is not within 1..={MAX_TOP_K}", cfg.top_k),
            ));
        }
        if cfg.max_crops == 0 {
            return Err(bad("max_crops", "0 would classify nothing".into()));
        }
        let bytes = read_model(&path)?;
        let (plan, info) = load_plan_from_bytes(&path, &bytes, cfg.input_size)?;
        let width = match info.outputs.as_slice() {
            [o] if o.shape.len() == 2 && o.shape[0] == 1 && o.shape[1] > 0 => o.shape[1],
            outputs => {
                let found = outputs
                    .iter()
                    .map(|o| format!("`{}` {:?}", o.name, o.shape))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(ClassifyError::Output { path, found });
            }
        };
        let mut labels = Vec::new();
        let head = match (&cfg.gallery, &cfg.labels) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "labels",
                    "a gallery names the labels; give `labels` or `gallery`, not both".into(),
                ));
            }
            (Some(file), None) => {
                if cfg.scores != Scores::Probabilities {
                    return Err(bad("scores", "an embedding has no class scores".into()));
                }
                let gallery = Gallery::load(&resolve(file), width, &mut labels)?;
                Head::Embedding {
                    gallery,
                    best: vec![0.0; labels.len()],
                }
            }
            (None, labels_cfg) => {
                let given = labels_cfg.as_deref().unwrap_or("");
                if given.is_empty() {
                    return Err(bad("labels", "a class-score model needs labels".into()));
                }
                let table = Labels::named(given, &resolve)?;
                if table.len() != width {
                    return Err(ClassifyError::ClassCount {
                        path,
                        classes: width,
                        labels: given.into(),
                        named: table.len(),
                    });
                }
                labels = table.names().to_vec();
                Head::Scores(cfg.scores)
            }
        };
        let state = SimpleState::new(&plan).map_err(|e| load_err(&path, e))?;
        let (w, h) = (info.input_shape[3], info.input_shape[2]);
        Ok(Self {
            model: running_model(&name, &path, &bytes),
            name,
            labels,
            classes: cfg.classes.clone(),
            max_crops: cfg.max_crops,
            margin: cfg.margin,
            top_k: cfg.top_k,
            head,
            preprocess: cfg.preprocess.plan(w, h),
            state,
            crop: Image::new(0, 0, 3),
            values: vec![0.0; width],
        })
    }

    /// The pixels of `bbox` grown by the margin, clipped to a `width × height` image: whole
    /// pixels `[x0, x1) × [y0, y1)`, empty when the box lies outside.
    pub fn crop_rect(&self, bbox: &BBox, width: usize, height: usize) -> [usize; 4] {
        let (mx, my) = (
            self.margin * (bbox.x2 - bbox.x1),
            self.margin * (bbox.y2 - bbox.y1),
        );
        let clip = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi);
        let x0 = clip((bbox.x1 - mx).floor(), width);
        let y0 = clip((bbox.y1 - my).floor(), height);
        let x1 = clip((bbox.x2 + mx).ceil(), width).max(x0);
        let y1 = clip((bbox.y2 + my).ceil(), height).max(y0);
        [x0, y0, x1, y1]
    }

    /// Classifies the crop of `bbox` in the RGB `image`: `out` gets the best labels. A crop
    /// that is empty after clipping gets none.
    pub fn classify(
        &mut self,
        image: &Image,
        bbox: &BBox,
        out: &mut TopK,
    ) -> Result<(), DetectError> {
        out.clear();
        let [x0, y0, x1, y1] = self.crop_rect(bbox, image.width, image.height);
        if x1 == x0 || y1 == y0 {
            return Ok(());
        }
        let c = image.channels;
        self.crop.reshape(x1 - x0, y1 - y0, c);
        for (y, row) in (y0..y1).zip(self.crop.data.chunks_exact_mut((x1 - x0) * c)) {
            row.copy_from_slice(&image.row(y)[x0 * c..x1 * c]);
        }
        let run = |e: anyhow::Error| DetectError::Run {
            name: self.name.clone(),
            reason: format!("{e:#}"),
        };
        let (w, h) = (self.preprocess.width, self.preprocess.height);
        let mut input = Tensor::zero::<f32>(&[1, 3, h, w]).map_err(run)?;
        {
            let mut view = input.try_as_plain_ram_mut().map_err(run)?;
            let slice = view.as_slice_mut::<f32>().map_err(run)?;
            self.preprocess
                .run(&self.crop, slice)
                .map_err(|e| run(e.into()))?;
        }
        let outputs = self.state.run(tvec!(input.into_tvalue())).map_err(run)?;
        let raw = outputs[0]
            .try_as_plain_ram()
            .and_then(|t| t.as_slice::<f32>())
            .map_err(run)?;
        self.rank(raw, out);
        Ok(())
    }

    /// Turns one crop's raw output (scores or an embedding, as many values as the model's
    /// output) into the top-k labels.
    pub fn rank(&mut self, raw: &[f32], out: &mut TopK) {
        out.clear();
        self.values.copy_from_slice(raw);
        let scores: &[f32] = match &mut self.head {
            Head::Scores(kind) => {
                match kind {
                    Scores::Probabilities => {}
                    Scores::Sigmoid => self
                        .values
                        .iter_mut()
                        .for_each(|v| *v = super::decode::sigmoid(*v)),
                    Scores::Softmax => {
                        let top = self
                            .values
                            .iter()
                            .copied()
                            .fold(f32::NEG_INFINITY, f32::max);
                        self.values.iter_mut().for_each(|v| *v = (*v - top).exp());
                        let sum: f32 = self.values.iter().sum();
                        self.values.iter_mut().for_each(|v| *v /= sum);
                    }
                }
                &self.values
            }
            Head::Embedding { gallery, best } => {
                normalise(&mut self.values);
                best.fill(f32::NEG_INFINITY);
                let dim = self.values.len();
                for (row, &label) in gallery.rows.chunks_exact(dim).zip(&gallery.labels) {
                    let sim: f32 = row.iter().zip(&self.values).map(|(a, b)| a * b).sum();
                    let b = &mut best[usize::from(label)];
                    *b = b.max(sim);
                }
                best
            }
        };
        // Insertion into a list of at most MAX_TOP_K, best first; ties keep the lower index.
        for (i, &s) in scores.iter().enumerate() {
            if s.is_nan() {
                continue;
            }
            let at = out.iter().position(|&(_, o)| s > o).unwrap_or(out.len());
            if at < self.top_k {
                if out.len() == self.top_k {
                    out.pop();
                }
                let _ = out.insert(at, (i as u16, s));
            }
        }
    }
}
