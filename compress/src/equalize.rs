//! Activation ranges evened out across channels ahead of int8, without changing what the
//! float model computes.
//!
//! An int8 convolution quantises its input with one scale for all channels, set by the widest
//! channel: at UltraFace RFB-320's first depthwise layers, half the channels span less than
//! half that range on the calibration images and the narrowest 13–30% of it, so they get that
//! share of the 256 levels. Where a convolution A feeds a depthwise convolution B
//! through nothing but ReLU or max pooling (both commute with a positive scale per channel),
//! dividing A's output channel c by `s_c` and multiplying B's channel c by `s_c`
//! leaves every output as it was. Both have their weights quantised per output channel, so
//! neither's int8 weights lose anything; the tensor B quantises gets channels of one range
//! (but those quieter than `MAX_GAIN` allows).
//! With RFB-320's 10 such chains evened out, every layer int8 stayed within `quantize`'s
//! score-drift budget (0.057–0.091 on the calibration images, 0.119 without), so no layer went
//! back towards float. `quantize` does this with `minmax` ranges only: with `entropy`'s
//! clipping thresholds, which then clip every channel, RFB-320's held-out agreement fell
//! (mAP@0.5 1.000 → 0.846 and 0.923).

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::calib;
use crate::onnx::{Model, ModelError, attr};

/// The most a channel is amplified: a channel quiet on every calibration image may not be on
/// the next, and amplified it would clip against the others' range. RFB-320 with every layer
/// int8 kept held-out mAP@0.5 1.000 in the three runs capped at 4 or 8, 0.846–0.923 in the four
/// capped at 16 (faces float scores near the threshold).
const MAX_GAIN: f32 = 4.0;

/// One A → … → B chain: A's node, B's node and the tensor B reads.
struct Chain {
    a: usize,
    b: usize,
    read: String,
}

/// Evens out the channels of every depthwise convolution's input that a convolution feeds
/// (see the module's doc), from their ranges over `inputs`; returns how many it evened.
pub fn equalize(
    model: &mut Model,
    inputs: &[Tensor],
    shape: [usize; 4],
    progress: impl FnMut(&str),
) -> Result<usize, ModelError> {
    let chains = chains(model);
    if chains.is_empty() {
        return Ok(0);
    }
    let read: Vec<String> = chains.iter().map(|c| c.read.clone()).collect();
    let ranges = calib::channel_absmax(model, &read, inputs, shape, progress)?;
    for c in &chains {
        let r = &ranges[&c.read];
        let widest = r.iter().fold(0f32, |m, x| m.max(*x));
        if widest <= 0.0 {
            continue;
        }
        let s: Vec<f32> = r.iter().map(|x| (x / widest).max(1.0 / MAX_GAIN)).collect();
        scale_channels(model, c.a, &s, true)?;
        scale_channels(model, c.b, &s, false)?;
    }
    model.remove_dead();
    Ok(chains.len())
}

/// Every convolution A → (Relu | MaxPool)* → depthwise convolution B in which each tensor
/// after A's reaches only the next node and is no graph output.
///
/// LeakyReLU commutes with the scales too, but evening out NanoDet-m's 19 such chains made its
/// held-out agreement with float worse (mAP@0.5 0.750 → 0.739 and 0.656 in two runs, mean
/// score drift 0.010 → 0.024–0.028), so chains through it are left as they are.
fn chains(model: &Model) -> Vec<Chain> {
    let producers = model.producers();
    let consumers = model.consumers();
    let g = model.graph();
    let sole =
        |t: &str| consumers.get(t).is_some_and(|c| c.len() == 1) && !model.is_graph_output(t);
    let conv = |i: usize| {
        let n = &g.node[i];
        let w = model.constant_f32(n.input.get(1)?)?.0;
        (n.op_type == "Conv" && n.domain.is_empty() && w.len() == 4).then_some(w)
    };
    g.node
        .iter()
        .enumerate()
        .filter_map(|(b, n)| {
            let w = conv(b)?;
            let groups = attr::get_int(n, "group").unwrap_or(1) as usize;
            // Depthwise, one output channel per input channel.
            if w[1] != 1 || groups != w[0] || groups < 2 {
                return None;
            }
            let mut t = n.input[0].as_str();
            loop {
                if !sole(t) {
                    return None;
                }
                let p = *producers.get(t)?;
                let pn = &g.node[p];
                match pn.op_type.as_str() {
                    "Relu" | "MaxPool" if pn.output.len() == 1 => t = &pn.input[0],
                    "Conv" if conv(p)?[0] == w[0] => {
                        return Some(Chain {
                            a: p,
                            b,
                            read: n.input[0].clone(),
                        });
                    }
                    _ => return None,
                }
            }
        })
        .collect()
}

/// Divides (`divide`) or multiplies output channel c of convolution `i`'s weights, and
/// dividing, its bias, by `s[c]`.
fn scale_channels(model: &mut Model, i: usize, s: &[f32], divide: bool) -> Result<(), ModelError> {
    let n: pb::NodeProto = model.graph().node[i].clone();
    let konst = |m: &Model, name: &str| {
        m.constant_f32(name)
            .ok_or_else(|| m.graph_err(format!("{}: {name} is not a constant", n.name)))
    };
    let by = |c: usize| if divide { 1.0 / s[c] } else { s[c] };
    let (wshape, mut w) = konst(model, &n.input[1])?;
    let per = w.len() / s.len();
    for (c, row) in w.chunks_mut(per).enumerate() {
        row.iter_mut().for_each(|x| *x *= by(c));
    }
    model.set_input_f32(i, 1, &format!("{}.eq_weight", n.name), &wshape, &w);
    if let Some(b) = n.input.get(2).filter(|b| divide && !b.is_empty()) {
        let (bshape, mut bias) = konst(model, b)?;
        bias.iter_mut().enumerate().for_each(|(c, x)| *x *= by(c));
        model.set_input_f32(i, 2, &format!("{}.eq_bias", n.name), &bshape, &bias);
    }
    Ok(())
}
