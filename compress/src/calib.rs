//! Activation ranges for post-training quantisation: the float model run through tract on
//! calibration images, the chosen tensors observed, a clipping threshold per tensor.

use std::collections::HashMap;

use serde::Serialize;
use tract_onnx::prelude::*;

use crate::measure;
use crate::onnx::{Model, ModelError, float_unshaped};

/// How a tensor's observed values become its symmetric clipping threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, clap::ValueEnum)]
pub enum Method {
    /// The largest magnitude seen. On the reference detectors clipping cost more accuracy
    /// than the coarser steps of an unclipped range: with every layer int8, keeping the score
    /// drift within budget moved none of YuNet's layers back towards float and 3 of UltraFace
    /// RFB-320's, against 26 and 58 with `Entropy`'s thresholds. Not the default: the more
    /// int8 layers it keeps, each with its own quantisation nodes, made YuNet's file 0.355× of
    /// float, over the 0.35× size target.
    Minmax,
    /// The 99.99th percentile of magnitudes: a few outliers do not stretch the range.
    Percentile,
    /// The threshold whose 128-level quantisation loses the least information (KL
    /// divergence between the clipped and quantised histograms, as TensorRT calibrates).
    Entropy,
}

const BINS: usize = 2048;
const LEVELS: usize = 128;
const PERCENTILE: f64 = 0.9999;

/// Magnitude histograms of each observed tensor over every calibration input.
struct Observed {
    absmax: Vec<f32>,
    hist: Vec<Vec<u64>>,
}

/// Runs `model` on `inputs`, observing `tensors`; returns each tensor's threshold.
pub fn calibrate(
    model: &Model,
    tensors: &[String],
    inputs: &[Tensor],
    shape: [usize; 4],
    method: Method,
    mut progress: impl FnMut(&str),
) -> Result<HashMap<String, f32>, ModelError> {
    if tensors.is_empty() {
        return Ok(HashMap::new());
    }
    let (plan, index) = observe(model, tensors, shape)?;
    let mut obs = Observed {
        absmax: vec![0.0; tensors.len()],
        hist: vec![vec![0; BINS]; tensors.len()],
    };
    // Two passes: the ranges first, then histograms over them (entropy and percentile).
    let passes = if method == Method::Minmax { 1 } else { 2 };
    for pass in 0..passes {
        for (n, input) in inputs.iter().enumerate() {
            progress(&format!(
                "calibrate: pass {}/{passes}, image {}/{}",
                pass + 1,
                n + 1,
                inputs.len()
            ));
            let outs = measure::run(&plan, input).map_err(|e| model.tract_err(&e))?;
            for (k, &ix) in index.iter().enumerate() {
                let t = outs[ix].cast_to::<f32>().map_err(|e| model.tract_err(&e))?;
                let xs = t
                    .try_as_plain_ram()
                    .and_then(|r| Ok(r.as_slice::<f32>()?.to_vec()))
                    .map_err(|e| model.tract_err(&e))?;
                if pass == 0 {
                    let m = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
                    obs.absmax[k] = obs.absmax[k].max(m);
                } else {
                    let w = obs.absmax[k].max(f32::MIN_POSITIVE) / BINS as f32;
                    let h = &mut obs.hist[k];
                    for x in xs {
                        h[((x.abs() / w) as usize).min(BINS - 1)] += 1;
                    }
                }
            }
        }
    }
    Ok(tensors
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let max = obs.absmax[k].max(1e-8);
            let thr = match method {
                Method::Minmax => max,
                Method::Percentile => percentile(&obs.hist[k], max),
                Method::Entropy => entropy(&obs.hist[k], max),
            };
            (t.clone(), thr)
        })
        .collect())
}

/// A plan of `model` with `tensors` also exposed as outputs, and where each of them lands
/// among the plan's outputs.
fn observe(
    model: &Model,
    tensors: &[String],
    shape: [usize; 4],
) -> Result<(Arc<TypedSimplePlan>, Vec<usize>), ModelError> {
    let mut observing = model.clone();
    for t in tensors {
        if !observing.is_graph_output(t) {
            observing.graph_mut().output.push(float_unshaped(t));
        }
    }
    let outputs = &observing.graph().output;
    let index = tensors
        .iter()
        .map(|t| outputs.iter().position(|o| &o.name == t).expect("added"))
        .collect();
    Ok((observing.plan(shape)?, index))
}

fn percentile(hist: &[u64], max: f32) -> f32 {
    let total: u64 = hist.iter().sum();
    let target = (total as f64 * PERCENTILE).ceil() as u64;
    let mut acc = 0;
    for (i, h) in hist.iter().enumerate() {
        acc += h;
        if acc >= target {
            return (i + 1) as f32 * max / hist.len() as f32;
        }
    }
    max
}

/// TensorRT's entropy calibration over a magnitude histogram.
pub fn entropy(hist: &[u64], max: f32) -> f32 {
    let width = max / hist.len() as f32;
    let mut best = (f64::INFINITY, hist.len());
    for i in (LEVELS..=hist.len()).step_by(8) {
        // Reference: the first i bins, everything beyond folded into the last one.
        let mut p: Vec<f64> = hist[..i].iter().map(|v| *v as f64).collect();
        p[i - 1] += hist[i..].iter().sum::<u64>() as f64;
        // Candidate: the same i bins merged into LEVELS levels, spread back over the bins
        // that were non-empty.
        let mut q = vec![0f64; i];
        for l in 0..LEVELS {
            let (a, b) = (
                l * i / LEVELS,
                ((l + 1) * i / LEVELS).max(l * i / LEVELS + 1),
            );
            let sum: f64 = hist[a..b].iter().map(|v| *v as f64).sum();
            let nonzero = hist[a..b].iter().filter(|v| **v > 0).count();
            if nonzero > 0 {
                for j in a..b {
                    if hist[j] > 0 {
                        q[j] = sum / nonzero as f64;
                    }
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| {
                let (p, q) = (p / ps, (q / qs).max(1e-12));
                p * (p / q).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    (best.1 as f32 + 0.5) * width
}

/// The mean of each channel of `tensors` ([N,C,H,W]) over every calibration input: what bias
/// correction needs to cancel the systematic shift that rounding the weights introduces.
pub fn channel_means(
    model: &Model,
    tensors: &[String],
    inputs: &[Tensor],
    shape: [usize; 4],
    progress: impl FnMut(&str),
) -> Result<HashMap<String, Vec<f32>>, ModelError> {
    Ok(channel_moments(model, tensors, inputs, shape, progress)?
        .into_iter()
        .map(|(t, m)| (t, m.mean))
        .collect())
}

/// One tensor's per-channel first and second moments over the calibration inputs.
#[derive(Clone, Debug, Default)]
pub struct Moments {
    pub mean: Vec<f32>,
    /// E[x²]: the channel's energy, what it can contribute to whatever reads it.
    pub mean_square: Vec<f32>,
}

/// [`Moments`] of each channel of `tensors` ([N,C,H,W]) over every calibration input.
pub fn channel_moments(
    model: &Model,
    tensors: &[String],
    inputs: &[Tensor],
    shape: [usize; 4],
    progress: impl FnMut(&str),
) -> Result<HashMap<String, Moments>, ModelError> {
    let mut sums: Vec<[Vec<f64>; 2]> = vec![Default::default(); tensors.len()];
    let weight = |per: usize| (per.max(1) * inputs.len()) as f64;
    each_channel(
        model,
        tensors,
        inputs,
        shape,
        "moments",
        progress,
        |k, ch, xs| {
            for (power, s) in sums[k].iter_mut().enumerate() {
                if s.len() <= ch {
                    s.resize(ch + 1, 0.0);
                }
                s[ch] += xs
                    .iter()
                    .map(|v| (*v as f64).powi(power as i32 + 1))
                    .sum::<f64>()
                    / weight(xs.len());
            }
        },
    )?;
    let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect();
    Ok(tensors
        .iter()
        .zip(sums)
        .map(|(t, [m, q])| {
            (
                t.clone(),
                Moments {
                    mean: f32s(&m),
                    mean_square: f32s(&q),
                },
            )
        })
        .collect())
}

/// The largest magnitude of each channel of `tensors` ([N,C,H,W]) over every calibration input.
pub fn channel_absmax(
    model: &Model,
    tensors: &[String],
    inputs: &[Tensor],
    shape: [usize; 4],
    progress: impl FnMut(&str),
) -> Result<HashMap<String, Vec<f32>>, ModelError> {
    let mut max: Vec<Vec<f32>> = vec![Vec::new(); tensors.len()];
    each_channel(
        model,
        tensors,
        inputs,
        shape,
        "ranges",
        progress,
        |k, ch, xs| {
            if max[k].len() <= ch {
                max[k].resize(ch + 1, 0.0);
            }
            max[k][ch] = xs.iter().fold(max[k][ch], |m, x| m.max(x.abs()));
        },
    )?;
    Ok(tensors.iter().cloned().zip(max).collect())
}

/// Runs `model` on each input and hands `f` each channel of each of `tensors` ([N,C,H,W]):
/// the tensor's index, the channel's and its values.
fn each_channel(
    model: &Model,
    tensors: &[String],
    inputs: &[Tensor],
    shape: [usize; 4],
    what: &str,
    mut progress: impl FnMut(&str),
    mut f: impl FnMut(usize, usize, &[f32]),
) -> Result<(), ModelError> {
    let (plan, index) = observe(model, tensors, shape)?;
    for (n, input) in inputs.iter().enumerate() {
        progress(&format!(
            "calibrate: channel {what}, image {}/{}",
            n + 1,
            inputs.len()
        ));
        let outs = measure::run(&plan, input).map_err(|e| model.tract_err(&e))?;
        for (k, &ix) in index.iter().enumerate() {
            let t = outs[ix].cast_to::<f32>().map_err(|e| model.tract_err(&e))?;
            let c = t.shape().get(1).copied().unwrap_or(1).max(1);
            let xs = t
                .try_as_plain_ram()
                .and_then(|r| r.as_slice::<f32>())
                .map_err(|e| model.tract_err(&e))?;
            let per = xs.len() / c;
            for ch in 0..c {
                f(k, ch, &xs[ch * per..(ch + 1) * per]);
            }
        }
    }
    Ok(())
}
