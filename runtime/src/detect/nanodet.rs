//! NanoDet / PicoDet (GFL heads): per stride, `[1, N, classes]` scores and
//! `[1, N, 4 * (reg_max + 1)]` box-side distributions.
//!
//! A side's distance is the expectation of the softmax over its `reg_max + 1` bins, times
//! the stride, measured from the cell's anchor point; boxes are clipped to the input.
//! Class-aware NMS takes every class above its threshold (NanoDet's `multiclass_nms`);
//! class-agnostic NMS takes each anchor's best class (Kazuhito00's ONNX sample).

use super::decode::{
    AnchorPoint, Context, DecodeError, Decoder, FrameCheck, Level, Thresholds, argmax, sigmoid,
};
use super::nms::{Candidates, Nms};
use super::{BBox, Detection, Detections, Output, OutputInfo};

const STRIDES: [u32; 3] = [8, 16, 32];
pub(crate) const DEFAULT_REG_MAX: usize = 7;

struct Head {
    level: Level,
    cls: usize,
    dis: usize,
}

pub(crate) struct Nanodet {
    frame: FrameCheck,
    heads: Vec<Head>,
    classes: usize,
    bins: usize,
    anchor: AnchorPoint,
    sigmoid: bool,
    input_wh: (f32, f32),
    thresholds: Thresholds,
    nms: Nms,
    max: usize,
    candidates: Candidates,
}

impl Nanodet {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        let levels = ctx.levels(&ctx.strides(&STRIDES));
        let bins = ctx.cfg.reg_max.unwrap_or(DEFAULT_REG_MAX) + 1;
        let dist = 4 * bins;
        let dims = ctx
            .outputs
            .iter()
            .map(|o| {
                ctx.rank3(
                    o,
                    format!("[1, cells, classes] or [1, cells, {dist}]").as_str(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        ctx.expect_count(
            2 * levels.len(),
            "a class-score and a box-distribution output per stride",
        )?;

        let mut heads = Vec::with_capacity(levels.len());
        for &level in &levels {
            let found: Vec<usize> = (0..dims.len())
                .filter(|&i| dims[i].0 == level.cells())
                .collect();
            let [a, b] = found[..] else {
                return Err(ctx.layout_error(format!(
                    "stride {} needs two outputs [1, {}, _] ({}x{} cells), found {}",
                    level.stride,
                    level.cells(),
                    level.cols,
                    level.rows,
                    found.len()
                )));
            };
            let (cls, dis) = match (dims[a].1 == dist, dims[b].1 == dist) {
                (false, true) => (a, b),
                (true, false) => (b, a),
                _ => match (is_score(&ctx.outputs[a]), is_score(&ctx.outputs[b])) {
                    (true, false) => (a, b),
                    (false, true) => (b, a),
                    _ => {
                        return Err(ctx.layout_error(format!(
                            "cannot tell which of `{}` and `{}` holds class scores and which the \
                             [1, {}, {dist}] box distributions (reg_max {})",
                            ctx.outputs[a].name,
                            ctx.outputs[b].name,
                            level.cells(),
                            bins - 1
                        )));
                    }
                },
            };
            if dims[dis].1 != dist {
                return Err(
                    ctx.shape_error(&ctx.outputs[dis], format!("[1, {}, {dist}]", level.cells()))
                );
            }
            heads.push(Head { level, cls, dis });
        }
        let classes = dims[heads[0].cls].1;
        if let Some(h) = heads.iter().find(|h| dims[h.cls].1 != classes) {
            return Err(ctx.shape_error(
                &ctx.outputs[h.cls],
                format!("[1, {}, {classes}]", h.level.cells()),
            ));
        }
        ctx.check_classes(classes)?;
        let anchors: usize = levels.iter().map(Level::cells).sum();
        Ok(Self {
            frame: ctx.frame_check(),
            heads,
            classes,
            bins,
            anchor: ctx.cfg.anchor_point.unwrap_or(AnchorPoint::Nanodet),
            sigmoid: ctx.cfg.sigmoid_scores,
            input_wh: (ctx.input_wh.0 as f32, ctx.input_wh.1 as f32),
            thresholds: ctx.thresholds(classes)?,
            nms: ctx.nms(),
            max: ctx.max_detections(),
            candidates: Candidates::new(anchors * if ctx.cfg.class_agnostic { 1 } else { classes }),
        })
    }

    /// The box of cell `(gx, gy)` from its four side distributions.
    fn bbox(&self, dist: &[f32], level: &Level, gx: usize, gy: usize) -> BBox {
        let (cx, cy) = (
            self.anchor.at(gx, level.stride),
            self.anchor.at(gy, level.stride),
        );
        let mut d = [0f32; 4];
        for (side, bins) in d.iter_mut().zip(dist.chunks_exact(self.bins)) {
            let m = bins.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (mut sum, mut weighted) = (0.0, 0.0);
            for (j, &v) in bins.iter().enumerate() {
                let e = (v - m).exp();
                sum += e;
                weighted += j as f32 * e;
            }
            *side = weighted / sum * level.stride;
        }
        let (w, h) = self.input_wh;
        BBox {
            x1: (cx - d[0]).clamp(0.0, w),
            y1: (cy - d[1]).clamp(0.0, h),
            x2: (cx + d[2]).clamp(0.0, w),
            y2: (cy + d[3]).clamp(0.0, h),
        }
    }
}

/// Whether an output's name marks it as class scores (for when the shapes cannot tell).
fn is_score(o: &OutputInfo) -> bool {
    let n = o.name.to_ascii_lowercase();
    n.contains("cls") || n.contains("score")
}

impl Decoder for Nanodet {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        let squash = |v: f32| if self.sigmoid { sigmoid(v) } else { v };
        for head in &self.heads {
            let level = &head.level;
            let cls = outputs[head.cls].data.chunks_exact(self.classes);
            let dis = outputs[head.dis].data.chunks_exact(4 * self.bins);
            for (i, (scores, dist)) in cls.zip(dis).enumerate() {
                let (gx, gy) = (i % level.cols, i / level.cols);
                if self.nms.class_agnostic {
                    let (class, best) = argmax(scores);
                    let score = squash(best);
                    if score > self.thresholds.of(class) {
                        let bbox = self.bbox(dist, level, gx, gy);
                        self.candidates.push(Detection {
                            class_id: class as u16,
                            score,
                            bbox,
                            landmarks: None,
                        });
                    }
                    continue;
                }
                let mut bbox = None;
                for (class, &v) in scores.iter().enumerate() {
                    let score = squash(v);
                    if score > self.thresholds.of(class) {
                        let bbox = *bbox.get_or_insert_with(|| self.bbox(dist, level, gx, gy));
                        self.candidates.push(Detection {
                            class_id: class as u16,
                            score,
                            bbox,
                            landmarks: None,
                        });
                    }
                }
            }
        }
        self.candidates.select(Some(self.nms), self.max, out);
        Ok(())
    }
}
