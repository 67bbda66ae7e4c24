//! Post-training static int8 for tract, layer by layer: each convolution takes the fastest
//! form tract runs for its shape (measured), and layers whose quantisation costs accuracy go
//! back towards float until the agreement budget holds.
//!
//! The forms are [`ocelli::model::layers::Form`]'s. Each layer's speed comes from timing it
//! alone on this host, or from a table that `ocelli profile-layers` wrote on the board
//! ([`Options::timings`]).
//!
//! Detection heads (convolutions that write a model output with no other convolution in
//! between) never take ConvInteger: their outputs are the scores and boxes themselves, where
//! the activations' rounding lands unaveraged on every anchor. UltraFace slim with its two
//! 3×3 heads as ConvInteger kept every detection on the calibration images (drift 0.017) yet
//! lost 4 of 10 on held-out photos (0.89 → below the 0.7 threshold).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ocelli::model::layers::{
    Calibration, Cpu, Form, Layer, LayerTimes, Shape, Table, apply, conv_node, convolutions,
    time_layer,
};
use serde::Serialize;
use tract_onnx::prelude::*;

use crate::agree::FamilyAgreement;
use crate::calib::{self, Method};
use crate::measure;
use crate::onnx::{Model, ModelError};
use crate::{Error, data, equalize, eval, optimize};

#[derive(Clone, Debug)]
pub struct Options {
    pub method: Method,
    pub input_size: Option<[usize; 2]>,
    /// How the model is fed and decoded.
    pub setup: data::Setup,
    /// Least mAP@0.5 against the float model's detections on the calibration images.
    pub min_map: f64,
    /// Largest score change of a matched detection on the calibration images.
    pub max_score_drift: f32,
    /// Least mask or text-region IoU against float on the calibration images, for the
    /// families that have them.
    pub min_iou: f64,
    /// Largest mean keypoint distance from float's, pixels, for the pose family.
    pub max_keypoint_px: f64,
    /// Timed runs per layer form when choosing by speed.
    pub speed_rounds: usize,
    /// Activation int8 (ConvInteger) only where at least this much faster than float.
    pub min_speedup: f64,
    /// Layer timings taken on the board; shapes it lacks are timed on this host.
    pub timings: Option<BoardTimings>,
    /// With `Method::Minmax`, even out the channels of depthwise layers' inputs first
    /// (`equalize`).
    pub equalize: bool,
}

/// A layer-timing table from `ocelli profile-layers`, and the file it came from.
#[derive(Clone, Debug)]
pub struct BoardTimings {
    pub path: PathBuf,
    pub table: Table,
}

impl BoardTimings {
    /// The table at `path`, unless the device config of `setup` names a board whose CPU it
    /// was not timed on: then `warn` hears why, and the layers are timed on this host
    /// instead (`None`). Without a config, or with one naming no target, the table is taken
    /// as it is.
    pub fn load(
        path: &Path,
        setup: &data::Setup,
        warn: impl FnOnce(&str),
    ) -> Result<Option<Self>, Error> {
        let table = Table::load(path)?;
        if let Some(config) = &setup.config {
            let board = ocelli::config::Config::load_settings(config)
                .map_err(data::DataError::from)?
                .board;
            if let Some(cpu) = Cpu::of_board(&board)
                && !table.cpu.stands_for(&cpu)
            {
                warn(&format!(
                    "{}: timed on {}, but the board of {} is {cpu} (board.target, board.tract_cpu): \
                     timing the layers on this host instead",
                    path.display(),
                    table.cpu,
                    config.display()
                ));
                return Ok(None);
            }
        }
        Ok(Some(Self {
            path: path.into(),
            table,
        }))
    }
}

/// Where the layers' timings came from, when a table was given.
#[derive(Clone, Debug, Serialize)]
pub struct TimingsUsed {
    pub path: PathBuf,
    pub cpu: Cpu,
    pub threads: usize,
    /// Distinct layer shapes the table had, and those it lacked (timed on this host).
    pub from_table: usize,
    pub timed_here: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            method: Method::Entropy,
            input_size: None,
            setup: data::Setup::default(),
            min_map: 0.98,
            max_score_drift: 0.1,
            min_iou: 0.9,
            max_keypoint_px: 2.0,
            speed_rounds: 15,
            min_speedup: 1.05,
            timings: None,
            equalize: true,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub method: Method,
    pub calibration_images: usize,
    /// Depthwise layers whose input channels were evened out (`equalize`).
    pub equalized: usize,
    pub layers: Vec<Layer>,
    /// Agreement with the float model on the calibration images, after any reverts.
    pub map50: f64,
    pub score_drift_max: f32,
    /// The family's own measure against float on the calibration images, after any reverts.
    #[serde(flatten)]
    pub family: FamilyAgreement,
    /// Layers moved towards float for accuracy.
    pub reverted: usize,
    /// The board's table, when the layers' speeds came from one.
    pub timings: Option<TimingsUsed>,
}

impl Report {
    pub fn count(&self, form: Form) -> usize {
        self.layers.iter().filter(|l| l.form == form).count()
    }
}

/// Quantises `model` (a float model; `optimize` is applied first).
pub fn quantize(
    model: &Model,
    calib_dir: &Path,
    opts: &Options,
    mut progress: impl FnMut(&str),
) -> Result<(Model, Report), Error> {
    let cfg = data::detector_config(&model.path, &opts.setup)?;
    let mut float = model.clone();
    let opt = optimize::optimize(
        &mut float,
        &optimize::Options {
            input_size: opts.input_size.or(cfg.input_size),
        },
    )?;
    let shape = opt.input_shape;
    let inputs = data::input_tensors(calib_dir, &cfg.preprocess, shape)?;
    // Evened-out channels all reach the tensor's threshold, so a clipping threshold
    // (`entropy`, `percentile`) clips every channel's tail, not the widest channels' alone.
    let equalized = if opts.equalize && opts.method == Method::Minmax {
        equalize::equalize(&mut float, &inputs, shape, &mut progress)?
    } else {
        0
    };
    let facts = float.facts(shape)?;
    let mut layers = convolutions(&float, &facts);

    // Speed: each distinct layer shape timed alone in both forms, here or on the board.
    let mut timed: HashMap<Shape, LayerTimes> = HashMap::new();
    let mut used = opts.timings.as_ref().map(|b| TimingsUsed {
        path: b.path.clone(),
        cpu: b.table.cpu.clone(),
        threads: b.table.threads,
        from_table: 0,
        timed_here: 0,
    });
    let total = layers.len();
    for (i, l) in layers.iter_mut().enumerate() {
        let n = conv_node(&float, &l.output);
        let shape = Shape::of(n, &l.weight_shape, &l.input_shape);
        let t = match timed.get(&shape) {
            Some(t) => *t,
            None => {
                let board = opts.timings.as_ref().and_then(|b| b.table.get(&shape));
                if let Some(u) = &mut used {
                    *if board.is_some() {
                        &mut u.from_table
                    } else {
                        &mut u.timed_here
                    } += 1;
                }
                let t = match board {
                    Some(t) => t,
                    None => {
                        progress(&format!("quantize: timing layer {}/{total}", i + 1));
                        time_layer(&float, n, &l.input_shape, opts.speed_rounds)?
                    }
                };
                timed.insert(shape, t);
                t
            }
        };
        l.float_ms = t.float_ms;
        l.int8_ms = t.int8_ms;
        // Other processes only ever add time, so the fastest runs compare the layers' own
        // costs; the medians must agree, or one lucky run would decide.
        l.form = if !l.head && t.float_ms / t.int8_ms >= opts.min_speedup && t.int8_median_faster {
            Form::ConvInteger
        } else {
            Form::WeightInt8
        };
    }

    let observed: Vec<String> = layers
        .iter()
        .filter(|l| l.form == Form::ConvInteger)
        .map(|l| l.input.clone())
        .collect();
    let conv_inputs: Vec<String> = layers.iter().map(|l| l.input.clone()).collect();
    let means = calib::channel_means(&float, &conv_inputs, &inputs, shape, &mut progress)?;
    let thresholds = calib::calibrate(
        &float,
        &observed,
        &inputs,
        shape,
        opts.method,
        &mut progress,
    )?;

    // Accuracy: the whole model against float on the calibration images.
    let work = Scratch::new()?;
    let float_path = work.path(&format!("{}.float.onnx", stem(&model.path)));
    float.save(&float_path)?;
    let eval_opts = eval::Options {
        rounds: 0,
        setup: opts.setup.pinned(&cfg),
    };
    let cal = Calibration { thresholds, means };
    keep_int8_that_pays(
        &float,
        &mut layers,
        &cal,
        &inputs[0],
        opts.speed_rounds,
        &mut progress,
    )?;
    let mut quantized = apply(&float, &layers, &cal)?;
    let mut reverted = 0;
    let mut agreement;
    loop {
        let path = work.path(&format!("{}.int8.onnx", stem(&model.path)));
        quantized.save(&path)?;
        progress("quantize: checking agreement with float on the calibration images");
        agreement = eval::eval(&float_path, &path, calib_dir, &eval_opts, |_| {})?;
        if agreement.map50 >= opts.min_map
            && agreement.score_drift_max <= opts.max_score_drift
            && agreement.family.within(opts.min_iou, opts.max_keypoint_px)
        {
            break;
        }
        if layers.iter().all(|l| l.sensitivity.is_none()) {
            sensitivities(&float, &mut layers, &cal, &inputs, shape, &mut progress)?;
        }
        // Move one quantised layer one step towards float: the one whose step buys the most
        // accuracy for the time it gives up, so that a layer int8 saves milliseconds on (a
        // stem at full resolution) goes after the ones that save little.
        let worst = (0..layers.len())
            .filter(|i| layers[*i].form != Form::Float)
            .max_by(|a, b| revert_value(&layers[*a]).total_cmp(&revert_value(&layers[*b])));
        let Some(i) = worst else { break };
        layers[i].form = match layers[i].form {
            Form::ConvInteger => Form::WeightInt8,
            _ => Form::Float,
        };
        // What is left of its cost is that of the gentler form.
        layers[i].sensitivity = layers[i].sensitivity.map(|s| s / 4.0);
        reverted += 1;
        progress(&format!(
            "quantize: mAP@0.5 {:.3}, drift {:.3}{}: {reverted} layer(s) moved towards float",
            agreement.map50,
            agreement.score_drift_max,
            agreement.family.after_map()
        ));
        quantized = apply(&float, &layers, &cal)?;
    }
    let report = Report {
        method: opts.method,
        calibration_images: inputs.len(),
        equalized,
        layers,
        map50: agreement.map50,
        score_drift_max: agreement.score_drift_max,
        family: agreement.family,
        reverted,
        timings: used,
    };
    Ok((quantized, report))
}

/// What moving `l` one step towards float is worth: its sensitivity, less the more time the
/// step gives up (ConvInteger to weights-only int8 gives up the time int8 saved; weights-only
/// int8 to float, none): divided by `1 + lost / REVERT_SCALE_MS`. Steps that give up little
/// rank by sensitivity as they would alone.
fn revert_value(l: &Layer) -> f64 {
    let lost = match l.form {
        Form::ConvInteger => (l.float_ms - l.int8_ms).max(0.0),
        _ => 0.0,
    };
    l.sensitivity.unwrap_or(0.0) / (1.0 + lost / REVERT_SCALE_MS)
}

/// The time given up, in milliseconds, that halves a step's worth: several times what a
/// typical layer's int8 form saves, a fraction of what a full-resolution stem's does.
const REVERT_SCALE_MS: f64 = 0.5;

/// Layers timed alone do not add up to the whole model: int8 depthwise layers that each beat
/// float alone made YOLOX-Nano 16% slower as a whole. So each kind's int8 (ConvInteger)
/// layers (depthwise, 1×1, other) stay int8 only if the whole model runs faster with them
/// than with those layers' weights alone int8, timed taking turns.
fn keep_int8_that_pays(
    float: &Model,
    layers: &mut [Layer],
    cal: &Calibration,
    input: &Tensor,
    rounds: usize,
    progress: &mut impl FnMut(&str),
) -> Result<(), Error> {
    let kind = |l: &Layer| match (l.weight_shape[1], l.weight_shape[2..].iter().product()) {
        (1, _) if l.input_shape[1] > 1 => "depthwise",
        (_, 1usize) => "1×1",
        _ => "other",
    };
    let shape: [usize; 4] = input.shape().try_into().expect("4-d input");
    // The plan of the forms as they stand, carried from one kind to the next.
    let mut current = apply(float, layers, cal)?.plan(shape)?;
    for k in ["depthwise", "1×1", "other"] {
        let int8: Vec<usize> = (0..layers.len())
            .filter(|i| layers[*i].form == Form::ConvInteger && kind(&layers[*i]) == k)
            .collect();
        if int8.is_empty() {
            continue;
        }
        let mut without = layers.to_vec();
        for i in &int8 {
            without[*i].form = Form::WeightInt8;
        }
        let without_plan = apply(float, &without, cal)?.plan(shape)?;
        let t = measure::time_interleaved(&[&current, &without_plan], input, 2, rounds)
            .map_err(|e| Error::run(&float.path, &e))?;
        let (with_ms, without_ms) = (measure::median(&t[0]), measure::median(&t[1]));
        progress(&format!(
            "quantize: {} {k} layer(s) int8: whole model {with_ms:.2} ms, {without_ms:.2} ms without",
            int8.len()
        ));
        if with_ms >= without_ms {
            layers.clone_from_slice(&without);
            current = without_plan;
        }
    }
    Ok(())
}

fn stem(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().trim_end_matches(".onnx").to_string())
        .unwrap_or_default()
}

/// Each quantised layer's cost alone: the whole model's relative output error with only that
/// layer in its form.
fn sensitivities(
    float: &Model,
    layers: &mut [Layer],
    cal: &Calibration,
    inputs: &[Tensor],
    shape: [usize; 4],
    progress: &mut impl FnMut(&str),
) -> Result<(), Error> {
    // A few images are enough to rank layers.
    let inputs = &inputs[..inputs.len().min(4)];
    let plan = float.plan(shape)?;
    let reference: Vec<Vec<Tensor>> = inputs
        .iter()
        .map(|i| measure::run(&plan, i))
        .collect::<TractResult<_>>()
        .map_err(|e| Error::run(&float.path, &e))?;
    let n = layers.len();
    for (i, layer) in layers.iter_mut().enumerate() {
        if layer.form == Form::Float {
            continue;
        }
        progress(&format!("quantize: sensitivity of layer {}/{n}", i + 1));
        let one = [layer.clone()];
        let m = apply(float, &one, cal)?;
        let plan = m.plan(shape)?;
        let mut err = 0.0;
        for (input, r) in inputs.iter().zip(&reference) {
            let out = measure::run(&plan, input).map_err(|e| Error::run(&float.path, &e))?;
            err += relative_l2(r, &out).map_err(|e| Error::run(&float.path, &e))?;
        }
        layer.sensitivity = Some(err / inputs.len() as f64);
    }
    Ok(())
}

/// ‖b − a‖ / ‖a‖ over all outputs, averaged per output.
pub fn relative_l2(a: &[Tensor], b: &[Tensor]) -> TractResult<f64> {
    let mut total = 0.0;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.cast_to::<f32>()?, y.cast_to::<f32>()?);
        let (x, y) = (
            x.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            y.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        );
        let (mut num, mut den) = (0f64, 0f64);
        for (p, q) in x.iter().zip(&y) {
            num += ((q - p) as f64).powi(2);
            den += (*p as f64).powi(2);
        }
        total += (num / den.max(1e-12)).sqrt();
    }
    Ok(total / a.len().max(1) as f64)
}

/// A temporary folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, ModelError> {
        // Unique within the process too: quantisations may run side by side.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ocelli-compress-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| ModelError::Write {
            path: dir.clone(),
            source,
        })?;
        Ok(Self(dir))
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
