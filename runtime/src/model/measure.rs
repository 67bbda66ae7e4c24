//! Running models through tract: outputs, interleaved timings, per-operator profiles.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{SimpleState, eval};
use tract_onnx::tract_core::tract_linalg::multithread::{
    Executor, current_tract_executor, multithread_tract_scope,
};

pub type Plan = Arc<TypedSimplePlan>;

/// Runs one input; returns the outputs as owned tensors.
pub fn run(plan: &Plan, input: &Tensor) -> TractResult<Vec<Tensor>> {
    Ok(plan
        .run(tvec!(input.clone().into_tvalue()))?
        .into_iter()
        .map(|t| t.into_tensor())
        .collect())
}

/// The largest difference between two runs' outputs, relative to the reference's magnitude
/// where it exceeds 1 (box coordinates are in pixels, scores in 0..1).
pub fn max_error(reference: &[Tensor], candidate: &[Tensor]) -> TractResult<f32> {
    anyhow::ensure!(
        reference.len() == candidate.len(),
        "{} outputs against {}",
        reference.len(),
        candidate.len()
    );
    let mut worst = 0f32;
    for (a, b) in reference.iter().zip(candidate) {
        anyhow::ensure!(
            a.shape() == b.shape(),
            "output shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        );
        let (a, b) = (a.cast_to::<f32>()?, b.cast_to::<f32>()?);
        let (a, b) = (
            a.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
            b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec(),
        );
        for (x, y) in a.iter().zip(&b) {
            let e = (x - y).abs() / x.abs().max(1.0);
            if e.is_nan() || e > worst {
                worst = if e.is_nan() { f32::INFINITY } else { e };
            }
        }
    }
    Ok(worst)
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The smallest sample: under load from other processes, the best estimate of a run's own cost.
pub fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Runs plans one at a time on demand, each on its own executor (thread count), so that a
/// caller can take turns with runs outside tract (onnxruntime) as well as between plans.
pub struct Timer<'a> {
    states: Vec<(TypedSimpleState, Executor)>,
    input: &'a Tensor,
}

impl<'a> Timer<'a> {
    pub fn new(runs: &[(&Plan, Executor)], input: &'a Tensor) -> TractResult<Self> {
        let states = runs
            .iter()
            .map(|(p, e)| Ok((SimpleState::new(p)?, e.clone())))
            .collect::<TractResult<_>>()?;
        Ok(Self { states, input })
    }

    /// Runs plan `i` once; milliseconds.
    pub fn time(&mut self, i: usize) -> TractResult<f64> {
        let (state, executor) = &mut self.states[i];
        let input = tvec!(self.input.clone().into_tvalue());
        let start = Instant::now();
        multithread_tract_scope(executor.clone(), || state.run(input))?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }
}

/// Times every plan on `input` on tract's current executor, taking turns so that load and
/// frequency changes hit each alike; returns each plan's run times in milliseconds.
pub fn time_interleaved(
    plans: &[&Plan],
    input: &Tensor,
    warmup: usize,
    rounds: usize,
) -> TractResult<Vec<Vec<f64>>> {
    let executor = current_tract_executor();
    let runs: Vec<_> = plans.iter().map(|p| (*p, executor.clone())).collect();
    time_runs(&runs, input, warmup, rounds)
}

/// [`time_interleaved`] with each plan on its own executor.
pub fn time_runs(
    runs: &[(&Plan, Executor)],
    input: &Tensor,
    warmup: usize,
    rounds: usize,
) -> TractResult<Vec<Vec<f64>>> {
    let mut timer = Timer::new(runs, input)?;
    let mut times = vec![Vec::with_capacity(rounds); runs.len()];
    for round in 0..warmup + rounds {
        for (i, t) in times.iter_mut().enumerate() {
            let ms = timer.time(i)?;
            if round >= warmup {
                t.push(ms);
            }
        }
    }
    Ok(times)
}

/// One operator's share of a run.
#[derive(Clone, Debug, Serialize)]
pub struct OpTime {
    pub node: String,
    pub op: String,
    /// Median over the profiled runs, microseconds.
    pub us: f64,
}

/// Per-node times (tract's own operators after optimisation), most expensive first, for each
/// executor (thread count), the executors taking turns run by run.
pub fn profile(
    plan: &Plan,
    input: &Tensor,
    rounds: usize,
    executors: &[Executor],
) -> TractResult<Vec<Vec<OpTime>>> {
    let mut state = SimpleState::new(plan)?;
    let mut samples: Vec<HashMap<usize, Vec<f64>>> = vec![HashMap::new(); executors.len()];
    for _ in 0..rounds.max(1) {
        for (executor, samples) in executors.iter().zip(&mut samples) {
            multithread_tract_scope(executor.clone(), || {
                state.run_plan_with_eval(
                    tvec!(input.clone().into_tvalue()),
                    |ctx, st, node, inputs| {
                        let start = Instant::now();
                        let r = eval(ctx, st, node, inputs);
                        samples
                            .entry(node.id)
                            .or_default()
                            .push(start.elapsed().as_secs_f64() * 1e6);
                        r
                    },
                )
            })?;
        }
    }
    let model = plan.model();
    Ok(samples
        .into_iter()
        .map(|samples| {
            let mut ops: Vec<OpTime> = samples
                .into_iter()
                .map(|(id, t)| OpTime {
                    node: model.node(id).name.clone(),
                    op: model.node(id).op().name().to_string(),
                    us: median(&t),
                })
                .collect();
            ops.sort_by(|a, b| b.us.total_cmp(&a.us));
            ops
        })
        .collect())
}

/// Per-node times summed by operator kind, most expensive first.
pub fn by_op(ops: &[OpTime]) -> Vec<(String, f64, usize)> {
    let mut m: HashMap<&str, (f64, usize)> = HashMap::new();
    for o in ops {
        let e = m.entry(o.op.as_str()).or_default();
        e.0 += o.us;
        e.1 += 1;
    }
    let mut v: Vec<_> = m
        .into_iter()
        .map(|(k, (t, n))| (k.to_string(), t, n))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

/// Peak resident memory of this process so far, in kilobytes (Linux `VmHWM`).
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A deterministic input spread over `lo..hi`, for checks without photos.
pub fn pattern_input(shape: [usize; 4], lo: f32, hi: f32) -> tract_onnx::prelude::Tensor {
    let n: usize = shape.iter().product();
    // A 32-bit LCG: reproducible without a random-number dependency.
    let mut s = 0x2545_f491u32;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            lo + (hi - lo) * (s >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect();
    tract_ndarray::Array4::from_shape_vec(shape, data)
        .expect("sized")
        .into_tensor()
}
