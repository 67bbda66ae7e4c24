//! Two models side by side through the runtime's own detector: how well the candidate's
//! detections agree with the reference's, and what each costs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ocelli::config::DetectorConfig;
use ocelli::detect::{Detection, Detections, Detector};
use serde::Serialize;

use crate::agree::{FamilyAgreement, KeypointError, MeanIou, Metric, mask_iou};
use crate::data::{self, DataError};
use crate::measure::median;
use crate::{Error, onnx::ModelError};

/// IoU at which a candidate detection counts as finding a reference one.
pub const IOU: f32 = 0.5;

#[derive(Clone, Debug)]
pub struct Options {
    /// Timed runs of each model per image (after one untimed run).
    pub rounds: usize,
    /// How to feed and decode both models (the reference's file name picks a preset when
    /// it names no config or preset).
    pub setup: data::Setup,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rounds: 5,
            setup: data::Setup::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelStats {
    pub path: PathBuf,
    pub file_bytes: u64,
    /// Median inference time (tract only), milliseconds.
    pub inference_ms: f64,
    /// Median whole detection (preprocess + inference + decode), milliseconds.
    pub detect_ms: f64,
    pub detections: usize,
    /// Peak resident memory of a process that loads the model and runs one image, kB.
    pub peak_rss_kb: Option<u64>,
}

/// A reference detection and what the candidate made of it.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    pub label: String,
    pub reference_score: f32,
    /// The best-overlapping candidate detection of the same class (IoU ≥ 0.5), if any.
    pub candidate_score: Option<f32>,
    pub iou: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageReport {
    pub image: String,
    pub pairs: Vec<Pair>,
    /// Candidate detections matching no reference detection, as `label score`.
    pub extra: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub reference: ModelStats,
    pub candidate: ModelStats,
    pub images: usize,
    /// mAP@0.5 of the candidate taking the reference's detections as ground truth, over every
    /// class either model reports (1 when neither detects anything).
    pub map50: f64,
    /// What the family's outputs are judged by besides mAP@0.5, and its value.
    #[serde(flatten)]
    pub family: FamilyAgreement,
    /// |candidate − reference| score of matched detections: mean and largest.
    pub score_drift_mean: f32,
    pub score_drift_max: f32,
    /// Reference detections the candidate missed.
    pub missed: usize,
    /// candidate / reference median inference time.
    pub latency_ratio: f64,
    /// candidate / reference file size.
    pub size_ratio: f64,
    pub per_image: Vec<ImageReport>,
}

fn load(cfg: &DetectorConfig) -> Result<Detector, Error> {
    Detector::load(cfg, |p| p.to_path_buf()).map_err(|e| {
        Error::Model(ModelError::Tract {
            path: cfg.model.clone(),
            reason: e.to_string(),
        })
    })
}

/// The runtime configuration for both models: the reference's, with each model's path.
pub fn configs(
    reference: &Path,
    candidate: &Path,
    setup: &data::Setup,
) -> Result<(DetectorConfig, DetectorConfig), DataError> {
    let a = data::detector_config(reference, setup)?;
    let b = DetectorConfig {
        model: candidate.into(),
        ..a.clone()
    };
    Ok((a, b))
}

/// Runs both models over every image of `images`, taking turns for the timings.
pub fn eval(
    reference: &Path,
    candidate: &Path,
    images: &Path,
    opts: &Options,
    mut progress: impl FnMut(&str),
) -> Result<Report, Error> {
    let files = data::image_files(images)?;
    let (ca, cb) = configs(reference, candidate, &opts.setup)?;
    let (mut a, mut b) = (load(&ca)?, load(&cb)?);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    let (mut da_ms, mut db_ms) = (Vec::new(), Vec::new());
    let mut gt: Vec<(usize, Detection)> = Vec::new();
    let mut pred: Vec<(usize, Detection)> = Vec::new();
    let mut per_image = Vec::new();
    let (mut drift_sum, mut drift_max, mut matched, mut missed) = (0f32, 0f32, 0usize, 0usize);
    let (mut out_a, mut out_b) = (Detections::new(), Detections::new());
    let metric = Metric::of(a.family);
    let (mut masks, mut regions) = (MeanIou::default(), MeanIou::default());
    let mut keypoints = KeypointError::default();
    for (i, file) in files.iter().enumerate() {
        progress(&format!(
            "eval: {}/{}: {}",
            i + 1,
            files.len(),
            file.display()
        ));
        let rgb = data::load_image(file)?;
        for round in 0..=opts.rounds {
            let ra = a
                .detect(&rgb, &mut out_a)
                .map_err(|e| run_err(reference, e))?;
            let rb = b
                .detect(&rgb, &mut out_b)
                .map_err(|e| run_err(candidate, e))?;
            if round > 0 {
                ta.push(ra.inference_us as f64 / 1e3);
                tb.push(rb.inference_us as f64 / 1e3);
                da_ms.push(total_ms(&ra));
                db_ms.push(total_ms(&rb));
            }
        }
        let (ea, eb) = (a.extras(), b.extras());
        match metric {
            Metric::MaskIou => masks.add(&out_a, &out_b, |i, j| match (ea.mask(i), eb.mask(j)) {
                (Some(x), Some(y)) => mask_iou(&x, &y),
                _ => 0.0,
            }),
            Metric::RegionIou => regions.add(&out_a, &out_b, |i, j| {
                f64::from(out_a[i].bbox.iou(&out_b[j].bbox))
            }),
            Metric::KeypointError => keypoints.add(&out_a, &out_b, ea, eb),
            Metric::Map50 => {}
        }
        gt.extend(out_a.iter().map(|d| (i, *d)));
        pred.extend(out_b.iter().map(|d| (i, *d)));
        let mut used = vec![false; out_b.len()];
        let mut pairs = Vec::new();
        for d in out_a.iter() {
            let best = out_b
                .iter()
                .enumerate()
                .filter(|(_, c)| c.class_id == d.class_id)
                .map(|(j, c)| (j, c.bbox.iou(&d.bbox)))
                .filter(|(_, iou)| *iou >= IOU)
                .max_by(|x, y| x.1.total_cmp(&y.1));
            let label = a.labels.name(d.class_id).to_string();
            match best {
                Some((j, iou)) => {
                    used[j] = true;
                    let drift = (out_b[j].score - d.score).abs();
                    drift_sum += drift;
                    drift_max = drift_max.max(drift);
                    matched += 1;
                    pairs.push(Pair {
                        label,
                        reference_score: d.score,
                        candidate_score: Some(out_b[j].score),
                        iou,
                    });
                }
                None => {
                    missed += 1;
                    pairs.push(Pair {
                        label,
                        reference_score: d.score,
                        candidate_score: None,
                        iou: 0.0,
                    });
                }
            }
        }
        let extra = out_b
            .iter()
            .zip(&used)
            .filter(|(_, u)| !**u)
            .map(|(c, _)| format!("{} {:.2}", b.labels.name(c.class_id), c.score))
            .collect();
        per_image.push(ImageReport {
            image: file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            pairs,
            extra,
        });
    }
    let stats = |path: &Path, t: &[f64], d: &[f64], n: usize| ModelStats {
        path: path.into(),
        file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        inference_ms: median(t),
        detect_ms: median(d),
        detections: n,
        peak_rss_kb: None,
    };
    let (sa, sb) = (
        stats(reference, &ta, &da_ms, gt.len()),
        stats(candidate, &tb, &db_ms, pred.len()),
    );
    Ok(Report {
        latency_ratio: sb.inference_ms / sa.inference_ms,
        size_ratio: sb.file_bytes as f64 / sa.file_bytes.max(1) as f64,
        reference: sa,
        candidate: sb,
        images: files.len(),
        map50: mean_average_precision(&gt, &pred, IOU),
        family: FamilyAgreement {
            metric,
            mask_iou: (metric == Metric::MaskIou).then(|| masks.value()),
            region_iou: (metric == Metric::RegionIou).then(|| regions.value()),
            keypoint_error_px: keypoints.value(),
        },
        score_drift_mean: if matched > 0 {
            drift_sum / matched as f32
        } else {
            0.0
        },
        score_drift_max: drift_max,
        missed,
        per_image,
    })
}

fn total_ms(t: &ocelli::detect::DetectTimes) -> f64 {
    (t.preprocess_us + t.inference_us + t.postprocess_us) as f64 / 1e3
}

fn run_err(path: &Path, e: ocelli::detect::DetectError) -> Error {
    Error::Run {
        path: path.into(),
        reason: e.to_string(),
    }
}

/// mAP at `iou` of `pred` against `gt` (both tagged with their image), all-point
/// interpolated (PASCAL VOC 2010+), averaged over every class present in either.
pub fn mean_average_precision(
    gt: &[(usize, Detection)],
    pred: &[(usize, Detection)],
    iou: f32,
) -> f64 {
    let classes: BTreeSet<u16> = gt.iter().chain(pred).map(|(_, d)| d.class_id).collect();
    if classes.is_empty() {
        return 1.0;
    }
    let aps: Vec<f64> = classes
        .iter()
        .map(|c| {
            let g: Vec<&(usize, Detection)> = gt.iter().filter(|(_, d)| d.class_id == *c).collect();
            let mut p: Vec<&(usize, Detection)> =
                pred.iter().filter(|(_, d)| d.class_id == *c).collect();
            average_precision(&g, &mut p, iou)
        })
        .collect();
    aps.iter().sum::<f64>() / aps.len() as f64
}

fn average_precision(
    gt: &[&(usize, Detection)],
    pred: &mut [&(usize, Detection)],
    iou: f32,
) -> f64 {
    if gt.is_empty() {
        return 0.0;
    }
    pred.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let mut taken = vec![false; gt.len()];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve = Vec::with_capacity(pred.len());
    for (img, d) in pred.iter() {
        let best = gt
            .iter()
            .enumerate()
            .filter(|(_, (gi, _))| gi == img)
            .map(|(k, (_, g))| (k, g.bbox.iou(&d.bbox)))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        match best {
            Some((k, o)) if o >= iou && !taken[k] => {
                taken[k] = true;
                tp += 1;
            }
            _ => fp += 1,
        }
        curve.push((tp as f64 / gt.len() as f64, tp as f64 / (tp + fp) as f64));
    }
    // Precision made monotone from the right, integrated over recall steps.
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for i in 0..curve.len() {
        let p = curve[i..].iter().map(|c| c.1).fold(0.0, f64::max);
        ap += (curve[i].0 - prev_recall) * p;
        prev_recall = curve[i].0;
    }
    ap
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let kb = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1} MB", v as f64 / 1024.0));
    let _ = writeln!(
        s,
        "{:<10} {:>10} {:>12} {:>12} {:>10} {:>6}  file",
        "", "size", "inference", "detect", "peak RSS", "dets"
    );
    for (name, m) in [("reference", &r.reference), ("candidate", &r.candidate)] {
        let _ = writeln!(
            s,
            "{name:<10} {:>7.2} MB {:>9.2} ms {:>9.2} ms {:>10} {:>6}  {}",
            m.file_bytes as f64 / 1e6,
            m.inference_ms,
            m.detect_ms,
            kb(m.peak_rss_kb),
            m.detections,
            m.path.display()
        );
    }
    let _ = writeln!(
        s,
        "candidate/reference: size {:.2}×, inference {:.2}× (medians, taking turns, one thread)",
        r.size_ratio, r.latency_ratio
    );
    let _ = writeln!(
        s,
        "agreement over {} images: mAP@0.5 {:.3}; score drift mean {:.3}, max {:.3}; missed {}",
        r.images, r.map50, r.score_drift_mean, r.score_drift_max, r.missed
    );
    let family = r.family.to_string();
    if !family.is_empty() {
        let _ = writeln!(s, "{family}");
    }
    for im in &r.per_image {
        let pairs: Vec<String> = im
            .pairs
            .iter()
            .map(|p| match p.candidate_score {
                Some(c) => format!("{} {:.2}→{:.2}", p.label, p.reference_score, c),
                None => format!("{} {:.2}→missed", p.label, p.reference_score),
            })
            .collect();
        let extra = if im.extra.is_empty() {
            String::new()
        } else {
            format!("; extra: {}", im.extra.join(", "))
        };
        let _ = writeln!(s, "  {}: {}{}", im.image, pairs.join(", "), extra);
    }
    s
}
