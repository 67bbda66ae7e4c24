//! Layer-wise reconstruction after pruning (He et al. 2017, "Channel Pruning for Accelerating
//! Very Deep Neural Networks"; ThiNet): each dense convolution is refitted by ridge least
//! squares so that its output, computed from the pruned model's own input on calibration
//! images, matches what the same convolution of the unpruned model produced. Layers are
//! refitted in graph order, each from the inputs the earlier refits produce, so errors do not
//! compound.

use serde::Serialize;
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::measure;
use crate::onnx::{Facts, Model, ModelError, attr, float_unshaped};

/// A convolution to refit: its output tensor (named alike in both models) and which of the
/// unpruned model's output channels it still produces.
#[derive(Clone, Debug)]
pub struct Layer {
    pub output: String,
    pub rows: Vec<usize>,
}

/// How closely one layer reproduces the unpruned output on the calibration samples:
/// ‖y − ŷ‖ / ‖y‖ with the pruned weights as they were, and after the refit.
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    pub output: String,
    pub inputs: usize,
    pub samples: usize,
    pub error_before: f64,
    pub error_after: f64,
}

/// Ridge strength of channel selection, relative to the mean diagonal of the normal
/// equations: enough to keep dead (always-zero) input channels from making them singular.
const RIDGE: f64 = 1e-3;
/// How strongly a refit is pulled towards the weights it replaces, relative to the mean
/// diagonal: what the calibration images never excite keeps the trained behaviour.
const PRIOR: f64 = 1e-2;
/// Sampled output positions per fitted parameter of a row, and the bounds on their total:
/// neighbouring positions are correlated, and more samples only cost time.
const SAMPLES_PER_INPUT: usize = 16;
const MIN_SAMPLES: usize = 4096;
const MAX_SAMPLES: usize = 16384;

/// Where a convolution reads its input: kernel, strides, dilations and the padding before.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: [isize; 2],
}

impl Geometry {
    fn of(n: &pb::NodeProto, wshape: &[usize], input: &[usize], output: &[usize]) -> Self {
        let two = |name: &str| {
            attr::get_ints(n, name)
                .filter(|v| v.len() == 2)
                .map_or([1, 1], |v| [v[0] as usize, v[1] as usize])
        };
        let (kernel, stride, dilation) = ([wshape[2], wshape[3]], two("strides"), two("dilations"));
        let auto = attr::get(n, "auto_pad")
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
            .unwrap_or_default();
        let pad = std::array::from_fn(|i| {
            let total = ((output[i + 2] - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1)
                .saturating_sub(input[i + 2]);
            match auto.as_str() {
                "SAME_UPPER" => (total / 2) as isize,
                "SAME_LOWER" => total.div_ceil(2) as isize,
                "VALID" => 0,
                _ => attr::get_ints(n, "pads").map_or(0, |p| p[i] as isize),
            }
        });
        Self {
            channels: wshape[1],
            kernel,
            stride,
            dilation,
            pad,
        }
    }

    /// Inputs of one output row, plus the constant 1 that the bias multiplies.
    fn features(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1] + 1
    }

    /// The input patch that output position `(oy, ox)` sees, in the weights' [C, kh, kw]
    /// order, zero outside the image, then 1.
    fn patch(&self, x: &[f32], size: [usize; 2], (oy, ox): (usize, usize), out: &mut Vec<f64>) {
        out.clear();
        let [h, w] = size;
        for c in 0..self.channels {
            for ky in 0..self.kernel[0] {
                let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize - self.pad[0];
                for kx in 0..self.kernel[1] {
                    let ix = (ox * self.stride[1] + kx * self.dilation[1]) as isize - self.pad[1];
                    let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                    out.push(if inside {
                        x[(c * h + iy as usize) * w + ix as usize] as f64
                    } else {
                        0.0
                    });
                }
            }
        }
        out.push(1.0);
    }
}

/// One convolution as the fits see it: its node, where it reads, and which output
/// positions are sampled.
struct Site {
    node: pb::NodeProto,
    geometry: Geometry,
    input_size: [usize; 2],
    output_width: usize,
    positions: usize,
    per_image: usize,
    seed: u32,
}

impl Site {
    fn new(
        m: &Model,
        facts: &Facts,
        output: &str,
        seed: usize,
        images: usize,
    ) -> Result<Self, ModelError> {
        let node = m
            .graph()
            .node
            .iter()
            .find(|n| n.op_type == "Conv" && n.output.first().is_some_and(|o| o == output))
            .cloned()
            .ok_or_else(|| m.graph_err(format!("{output}: no convolution produces it")))?;
        let (wshape, _) = m
            .constant_f32(&node.input[1])
            .ok_or_else(|| m.graph_err(format!("{output}: weights not constant")))?;
        let (Some(ins), Some(outs)) = (facts.shape(&node.input[0]), facts.shape(output)) else {
            return Err(m.graph_err(format!("{output}: shapes unknown")));
        };
        let geometry = Geometry::of(&node, &wshape, ins, outs);
        let total = (geometry.features() * SAMPLES_PER_INPUT).clamp(MIN_SAMPLES, MAX_SAMPLES);
        let positions = outs[2] * outs[3];
        Ok(Self {
            geometry,
            input_size: [ins[2], ins[3]],
            output_width: outs[3],
            positions,
            per_image: total.div_ceil(images.max(1)).min(positions),
            seed: seed as u32,
            node,
        })
    }

    /// The output positions sampled on one image: all of them, or a reproducible spread.
    fn sample(&self, image: usize) -> Vec<usize> {
        if self.per_image == self.positions {
            return (0..self.positions).collect();
        }
        // A 32-bit LCG per layer and image.
        let mut s = (self.seed + 1).wrapping_mul(0x9e37_79b9) ^ (image as u32 + 1);
        (0..self.per_image)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as usize % self.positions
            })
            .collect()
    }

    /// Each sampled position's input patch, in order.
    fn patches(&self, x: &[f32], image: usize, mut each: impl FnMut(usize, &[f64])) {
        let mut f = Vec::with_capacity(self.geometry.features());
        for (s, p) in self.sample(image).into_iter().enumerate() {
            let at = (p / self.output_width, p % self.output_width);
            self.geometry.patch(x, self.input_size, at, &mut f);
            each(s, &f);
        }
    }
}

/// Refits `layers` of `pruned` (in graph order) against the same convolutions of `float`, on
/// `inputs`: W = (A + λI)⁻¹ (B + λW₀) per layer, by Cholesky in f64, where A and B are the
/// normal equations of the pruned input patches against the unpruned outputs and W₀ the
/// weights being replaced.
pub fn reconstruct(
    float: &Model,
    pruned: &mut Model,
    layers: &[Layer],
    inputs: &[Tensor],
    shape: [usize; 4],
    mut progress: impl FnMut(&str),
) -> Result<Vec<Fit>, ModelError> {
    if layers.is_empty() || inputs.is_empty() {
        return Ok(Vec::new());
    }
    let facts = pruned.facts(shape)?;
    let sites: Vec<Site> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| Site::new(pruned, &facts, &l.output, i, inputs.len()))
        .collect::<Result<_, _>>()?;
    // What the unpruned model computes at the sampled positions: targets[layer][image],
    // sample-major over the kept rows.
    progress("reconstruct: the unpruned model's outputs");
    let outputs: Vec<String> = layers.iter().map(|l| l.output.clone()).collect();
    let mut targets: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(inputs.len()); layers.len()];
    observe(float, &outputs, inputs, shape, |image, ys| {
        for (li, (l, y)) in layers.iter().zip(ys).enumerate() {
            let site = &sites[li];
            let mut t = Vec::with_capacity(site.per_image * l.rows.len());
            for p in site.sample(image) {
                t.extend(l.rows.iter().map(|r| y[r * site.positions + p]));
            }
            targets[li].push(t);
        }
    })?;
    let mut fits = Vec::with_capacity(layers.len());
    for (li, l) in layers.iter().enumerate() {
        progress(&format!(
            "reconstruct: layer {}/{}: {}",
            li + 1,
            layers.len(),
            l.output
        ));
        let site = &sites[li];
        let (d, rows) = (site.geometry.features(), l.rows.len());
        let mut eq = Normal::new(d, rows);
        let input = std::slice::from_ref(&site.node.input[0]);
        observe(pruned, input, inputs, shape, |image, x| {
            let y = &targets[li][image];
            site.patches(&x[0], image, |s, f| eq.add(f, &y[s * rows..(s + 1) * rows]));
        })?;
        eq.finish();
        let current = weights(pruned, &site.node, rows, d)?;
        let before = residual(&eq, &current);
        let (mut m, lambda) = eq.regularised(PRIOR);
        let fitted = cholesky(&mut m, d).map(|()| {
            let mut w = vec![0f64; rows * d];
            let mut col = vec![0f64; d];
            for r in 0..rows {
                for (i, c) in col.iter_mut().enumerate() {
                    *c = eq.b[i * rows + r] + lambda * current[r * d + i];
                }
                solve(&m, d, &mut col);
                w[r * d..(r + 1) * d].copy_from_slice(&col);
            }
            w
        });
        let after = fitted.as_ref().map_or(f64::INFINITY, |w| residual(&eq, w));
        // A refit that fits worse than what it replaces (a singular system) is not applied.
        if let Some(w) = fitted.filter(|_| after < before) {
            set_weights(pruned, &site.node, &w, rows, d, &site.geometry);
        }
        let rel = |e: f64| (e.max(0.0) / eq.yy.max(1e-30)).sqrt();
        fits.push(Fit {
            output: l.output.clone(),
            inputs: d - 1,
            samples: eq.count,
            error_before: rel(before),
            error_after: rel(after.min(before)),
        });
    }
    Ok(fits)
}

/// Runs `model` on each input, handing the named tensors' data to `each` input by input.
fn observe(
    model: &Model,
    tensors: &[String],
    inputs: &[Tensor],
    shape: [usize; 4],
    mut each: impl FnMut(usize, Vec<Vec<f32>>),
) -> Result<(), ModelError> {
    let mut observing = model.clone();
    let first = observing.graph().output.len();
    observing
        .graph_mut()
        .output
        .extend(tensors.iter().map(|t| float_unshaped(t)));
    let plan = observing.plan(shape)?;
    for (k, input) in inputs.iter().enumerate() {
        let outs = measure::run(&plan, input).map_err(|e| model.tract_err(&e))?;
        let data = outs[first..]
            .iter()
            .map(|t| {
                let t = t.cast_to::<f32>()?;
                Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
            })
            .collect::<TractResult<Vec<_>>>()
            .map_err(|e| model.tract_err(&e))?;
        each(k, data);
    }
    Ok(())
}

/// The normal equations of a least-squares fit from `d` features to `rows` targets,
/// accumulated sample by sample: A = Σ f fᵀ, B = Σ f yᵀ, and Σ‖y‖².
struct Normal {
    d: usize,
    rows: usize,
    a: Vec<f64>,
    b: Vec<f64>,
    yy: f64,
    count: usize,
}

impl Normal {
    fn new(d: usize, rows: usize) -> Self {
        Self {
            d,
            rows,
            a: vec![0.0; d * d],
            b: vec![0.0; d * rows],
            yy: 0.0,
            count: 0,
        }
    }

    fn add(&mut self, f: &[f64], y: &[f32]) {
        let (d, rows) = (self.d, self.rows);
        for (i, &fi) in f.iter().enumerate().filter(|(_, v)| **v != 0.0) {
            // The lower triangle only; `finish` mirrors it.
            for (aij, fj) in self.a[i * d..i * d + i + 1].iter_mut().zip(f) {
                *aij += fi * fj;
            }
            for (bir, yr) in self.b[i * rows..(i + 1) * rows].iter_mut().zip(y) {
                *bir += fi * *yr as f64;
            }
        }
        self.yy += y.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        self.count += 1;
    }

    fn finish(&mut self) {
        let d = self.d;
        for i in 0..d {
            for j in 0..i {
                self.a[j * d + i] = self.a[i * d + j];
            }
        }
    }

    /// A + λI and λ, relative to A's mean diagonal.
    fn regularised(&self, ridge: f64) -> (Vec<f64>, f64) {
        let d = self.d;
        let lambda = (ridge * (0..d).map(|i| self.a[i * d + i]).sum::<f64>() / d as f64).max(1e-12);
        let mut m = self.a.clone();
        for i in 0..d {
            m[i * d + i] += lambda;
        }
        (m, lambda)
    }
}

/// A convolution's weights and bias as rows of `d` (inputs, then bias), in f64.
fn weights(m: &Model, n: &pb::NodeProto, rows: usize, d: usize) -> Result<Vec<f64>, ModelError> {
    let (_, w) = m
        .constant_f32(&n.input[1])
        .ok_or_else(|| m.graph_err(format!("{}: weights not constant", n.output[0])))?;
    let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => {
            m.constant_f32(b)
                .ok_or_else(|| m.graph_err(format!("{b}: bias not constant")))?
                .1
        }
        None => vec![0.0; rows],
    };
    let k = d - 1;
    Ok((0..rows)
        .flat_map(|r| {
            w[r * k..(r + 1) * k]
                .iter()
                .chain(std::iter::once(&bias[r]))
                .map(|v| *v as f64)
                .collect::<Vec<_>>()
        })
        .collect())
}

fn set_weights(m: &mut Model, n: &pb::NodeProto, w: &[f64], rows: usize, d: usize, g: &Geometry) {
    let k = d - 1;
    let (mut nw, mut nb) = (Vec::with_capacity(rows * k), Vec::with_capacity(rows));
    for r in 0..rows {
        nw.extend(w[r * d..r * d + k].iter().map(|v| *v as f32));
        nb.push(w[r * d + k] as f32);
    }
    let out = &n.output[0];
    let i = m
        .graph()
        .node
        .iter()
        .position(|x| x.op_type == "Conv" && x.output.first() == Some(out))
        .expect("found before");
    let dims = [rows, g.channels, g.kernel[0], g.kernel[1]];
    m.set_input_f32(i, 1, &format!("{out}.refit_w"), &dims, &nw);
    m.set_input_f32(i, 2, &format!("{out}.refit_b"), &[rows], &nb);
}

/// Σ‖y − W f‖² over the samples, from the normal equations: yy − 2 Σ wᵀb + Σ wᵀA w.
fn residual(eq: &Normal, w: &[f64]) -> f64 {
    let (d, rows) = (eq.d, eq.rows);
    let mut e = eq.yy;
    for r in 0..rows {
        let wr = &w[r * d..(r + 1) * d];
        for i in 0..d {
            let aw: f64 = eq.a[i * d..(i + 1) * d]
                .iter()
                .zip(wr)
                .map(|(x, y)| x * y)
                .sum();
            e += wr[i] * (aw - 2.0 * eq.b[i * rows + r]);
        }
    }
    e
}

/// In-place Cholesky factorisation of the symmetric positive definite `m` (d×d, row-major):
/// its lower triangle becomes L with m = L Lᵀ. `None` when `m` is not positive definite.
fn cholesky(m: &mut [f64], d: usize) -> Option<()> {
    for j in 0..d {
        let s: f64 = (0..j).map(|k| m[j * d + k] * m[j * d + k]).sum();
        let diag = m[j * d + j] - s;
        if diag <= 0.0 || !diag.is_finite() {
            return None;
        }
        let ljj = diag.sqrt();
        m[j * d + j] = ljj;
        for i in j + 1..d {
            let s: f64 = (0..j).map(|k| m[i * d + k] * m[j * d + k]).sum();
            m[i * d + j] = (m[i * d + j] - s) / ljj;
        }
    }
    Some(())
}

/// Solves L Lᵀ x = b in place, with L from [`cholesky`].
fn solve(l: &[f64], d: usize, b: &mut [f64]) {
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * d + i];
    }
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * d + i];
    }
}

/// A channel group offered for pruning: its size, how many channels stay, and where its
/// channels enter dense convolutions (the convolution's output, the group's first channel's
/// index in that convolution's input).
#[derive(Clone, Debug)]
pub struct Group {
    pub channels: usize,
    pub keep: usize,
    pub readers: Vec<(String, usize)>,
}

/// What greedy removal tracks for one reader: its weights (rows of inputs then bias), kept
/// optimal for the remaining inputs, and the inverse of its inputs' second moments.
struct Surgeon {
    w: Vec<f64>,
    hinv: Vec<f64>,
    d: usize,
    rows: usize,
    k: usize,
}

impl Surgeon {
    fn block(&self, channel: usize) -> std::ops::Range<usize> {
        channel * self.k..(channel + 1) * self.k
    }

    /// (H⁻¹)_BB of a block, factorised.
    fn block_factor(&self, b: &std::ops::Range<usize>) -> Option<Vec<f64>> {
        let k = self.k;
        let mut m: Vec<f64> = b
            .clone()
            .flat_map(|i| b.clone().map(move |j| (i, j)))
            .map(|(i, j)| self.hinv[i * self.d + j])
            .collect();
        cholesky(&mut m, k).map(|()| m)
    }

    /// The output error (summed over the samples) that removing `channel` adds once the other
    /// weights are re-solved: Σ_rows w_B (H⁻¹_BB)⁻¹ w_Bᵀ.
    fn cost(&self, channel: usize) -> f64 {
        let b = self.block(channel);
        let Some(l) = self.block_factor(&b) else {
            return 0.0;
        };
        (0..self.rows)
            .map(|r| {
                let wb = &self.w[r * self.d + b.start..r * self.d + b.end];
                let mut u = wb.to_vec();
                solve(&l, self.k, &mut u);
                wb.iter().zip(&u).map(|(x, y)| x * y).sum::<f64>()
            })
            .sum()
    }

    /// Removes `channel`: the other weights absorb it, H⁻¹ loses its block.
    fn remove(&mut self, channel: usize) {
        let (b, d, k) = (self.block(channel), self.d, self.k);
        let Some(l) = self.block_factor(&b) else {
            return;
        };
        // G = (H⁻¹_BB)⁻¹ H⁻¹_B,: (k×d), column by column.
        let mut g = vec![0f64; k * d];
        let mut col = vec![0f64; k];
        for j in 0..d {
            for (t, i) in b.clone().enumerate() {
                col[t] = self.hinv[i * d + j];
            }
            solve(&l, k, &mut col);
            for t in 0..k {
                g[t * d + j] = col[t];
            }
        }
        for r in 0..self.rows {
            let wb: Vec<f64> = self.w[r * d + b.start..r * d + b.end].to_vec();
            for (t, wt) in wb.iter().enumerate() {
                for j in 0..d {
                    self.w[r * d + j] -= wt * g[t * d + j];
                }
            }
        }
        let hb: Vec<f64> = (0..d)
            .flat_map(|i| b.clone().map(move |c| (i, c)))
            .map(|(i, c)| self.hinv[i * d + c])
            .collect();
        for i in 0..d {
            for t in 0..k {
                let h = hb[i * k + t];
                if h != 0.0 {
                    for j in 0..d {
                        self.hinv[i * d + j] -= h * g[t * d + j];
                    }
                }
            }
        }
    }
}

/// Each group's channels to keep (ascending), chosen on the unpruned model's activations: one
/// channel removed at a time, always the one whose loss — with every reader's remaining
/// weights re-solved for it, as Optimal Brain Surgeon does — adds the least output error,
/// summed over the group's readers.
pub fn select(
    float: &Model,
    groups: &[Group],
    inputs: &[Tensor],
    shape: [usize; 4],
    mut progress: impl FnMut(&str),
) -> Result<Vec<Vec<usize>>, ModelError> {
    let mut names: Vec<String> = groups
        .iter()
        .flat_map(|g| g.readers.iter().map(|(r, _)| r.clone()))
        .collect();
    names.sort();
    names.dedup();
    let facts = float.facts(shape)?;
    let sites: Vec<Site> = names
        .iter()
        .enumerate()
        .map(|(i, r)| Site::new(float, &facts, r, i, inputs.len()))
        .collect::<Result<_, _>>()?;
    let mut tensors: Vec<String> = sites.iter().map(|s| s.node.input[0].clone()).collect();
    tensors.sort();
    tensors.dedup();
    let mut eqs: Vec<Normal> = sites
        .iter()
        .map(|s| Normal::new(s.geometry.features(), 0))
        .collect();
    progress("prune: input statistics of the readers");
    observe(float, &tensors, inputs, shape, |image, xs| {
        for (site, eq) in sites.iter().zip(&mut eqs) {
            let x = &xs[tensors
                .binary_search(&site.node.input[0])
                .expect("observed")];
            site.patches(x, image, |_, f| eq.add(f, &[]));
        }
    })?;
    let mut surgeons = Vec::with_capacity(sites.len());
    for (site, eq) in sites.iter().zip(&mut eqs) {
        eq.finish();
        let d = eq.d;
        let (mut m, _) = eq.regularised(RIDGE);
        cholesky(&mut m, d).ok_or_else(|| {
            float.graph_err(format!(
                "{}: input statistics not positive definite",
                site.node.output[0]
            ))
        })?;
        let mut hinv = vec![0f64; d * d];
        let mut col = vec![0f64; d];
        for j in 0..d {
            col.fill(0.0);
            col[j] = 1.0;
            solve(&m, d, &mut col);
            for i in 0..d {
                hinv[i * d + j] = col[i];
            }
        }
        let rows = facts.shape(&site.node.output[0]).map_or(0, |s| s[1]);
        surgeons.push(Surgeon {
            w: weights(float, &site.node, rows, d)?,
            hinv,
            d,
            rows,
            k: site.geometry.kernel[0] * site.geometry.kernel[1],
        });
    }
    let mut kept = Vec::with_capacity(groups.len());
    for (gi, g) in groups.iter().enumerate() {
        progress(&format!(
            "prune: choosing channels of group {}/{}",
            gi + 1,
            groups.len()
        ));
        let readers: Vec<(usize, usize)> = g
            .readers
            .iter()
            .map(|(r, off)| (names.binary_search(r).expect("listed"), *off))
            .collect();
        let mut alive = vec![true; g.channels];
        for _ in g.keep..g.channels {
            let best = (0..g.channels)
                .filter(|c| alive[*c])
                .map(|c| {
                    let cost: f64 = readers
                        .iter()
                        .map(|(r, off)| surgeons[*r].cost(off + c))
                        .sum();
                    (c, cost)
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(c, _)| c)
                .expect("more channels than kept");
            alive[best] = false;
            for (r, off) in &readers {
                surgeons[*r].remove(off + best);
            }
        }
        kept.push((0..g.channels).filter(|c| alive[*c]).collect());
    }
    Ok(kept)
}
