//! End-to-end query-based detectors (DETR, RT-DETR, D-FINE, DEIM, RF-DETR): every query is
//! one box; the best queries are kept by score, with no NMS. Three output layouts:
//!
//! - **joined**, Ultralytics' RT-DETR export: one `[1, Q, 4 + C]` of normalised
//!   `cx, cy, w, h` and C class probabilities; each query gives its best class.
//! - **split**, the authors' and Hugging Face's exports: boxes `[1, Q, 4]` (normalised
//!   `cx, cy, w, h`) and logits `[1, Q, C]`. Sigmoid-scored (focal loss: RT-DETR, D-FINE,
//!   RF-DETR), every query-class pair competes and a query may give several classes;
//!   softmax-scored (DETR, `softmax_scores`), the last logit is "no object" and each query
//!   gives its best class.
//! - **final**, D-FINE's and RT-DETR's deploy exports with the postprocessor inside:
//!   `labels [1, K]`, `boxes [1, K, 4]` (`x1, y1, x2, y2` scaled by the `orig_target_sizes`
//!   input, which the runtime sets to the model input's size) and `scores [1, K]`.

use super::decode::{Context, DecodeError, Decoder, FrameCheck, Thresholds, argmax, sigmoid};
use super::nms::Candidates;
use super::{BBox, Detection, Detections, Output, OutputInfo};

/// The layouts, as [`recognise`](super::decode::recognise) and the error messages name them.
pub(crate) const LAYOUTS: &str = "one [1,Q,4+C] output (Ultralytics), boxes [1,Q,4] with \
    logits [1,Q,C] (RT-DETR, D-FINE, RF-DETR, DETR), or labels [1,K], boxes [1,K,4] and \
    scores [1,K] (deploy exports with the postprocessor inside)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Joined,
    Split {
        boxes: usize,
        logits: usize,
        softmax: bool,
    },
    Final {
        labels: usize,
        boxes: usize,
        scores: usize,
    },
}

pub(crate) struct Detr {
    frame: FrameCheck,
    layout: Layout,
    /// Class count (without DETR's "no object").
    classes: usize,
    input_wh: (f32, f32),
    thresholds: Thresholds,
    max: usize,
    candidates: Candidates,
}

/// Which of `outputs` plays which part, or why none fits.
fn layout_of(outputs: &[OutputInfo], softmax: bool) -> Result<Layout, String> {
    let named = |i: usize, part: &str| outputs[i].name.to_ascii_lowercase().contains(part);
    let shapes: Vec<&[usize]> = outputs.iter().map(|o| o.shape.as_slice()).collect();
    match shapes[..] {
        [[1, q, n]] if *q > 0 && *n > 4 => Ok(Layout::Joined),
        [[1, q1, a], [1, q2, b]] if q1 == q2 && *q1 > 0 && (*a == 4 || *b == 4) => {
            let boxes = match (*a == 4, *b == 4) {
                (true, false) => 0,
                (false, true) => 1,
                // Four classes: only the names can tell.
                _ => match (
                    named(0, "box") || named(0, "det"),
                    named(1, "box") || named(1, "det"),
                ) {
                    (true, false) => 0,
                    (false, true) => 1,
                    _ => {
                        return Err("both outputs have 4 columns and neither is named as the \
                                    boxes (`*box*` or `dets`)"
                            .into());
                    }
                },
            };
            let logits = 1 - boxes;
            if softmax && shapes[logits][2] < 2 {
                return Err("softmax_scores needs at least one class besides \"no object\"".into());
            }
            Ok(Layout::Split {
                boxes,
                logits,
                softmax,
            })
        }
        [_, _, _] => {
            let find = |part: &str| (0..3).find(|&i| named(i, part));
            let (Some(labels), Some(boxes), Some(scores)) =
                (find("label"), find("box"), find("score"))
            else {
                return Err("three outputs must be named as labels, boxes and scores".into());
            };
            let k = shapes[boxes].get(1).copied().unwrap_or(0);
            let fits = shapes[labels] == [1, k]
                && shapes[scores] == [1, k]
                && shapes[boxes] == [1, k, 4]
                && k > 0;
            if !fits {
                return Err(format!(
                    "labels {:?}, boxes {:?} and scores {:?} are not [1,K], [1,K,4] and [1,K]",
                    shapes[labels], shapes[boxes], shapes[scores]
                ));
            }
            Ok(Layout::Final {
                labels,
                boxes,
                scores,
            })
        }
        _ => Err(format!(
            "the outputs are not {LAYOUTS}; check detector.family"
        )),
    }
}

impl Detr {
    pub fn new(ctx: &Context) -> Result<Self, DecodeError> {
        let layout = layout_of(ctx.outputs, ctx.cfg.softmax_scores)
            .map_err(|what| ctx.layout_error(what))?;
        let (queries, classes) = match layout {
            Layout::Joined => (ctx.outputs[0].shape[1], ctx.outputs[0].shape[2] - 4),
            Layout::Split {
                logits, softmax, ..
            } => {
                let s = &ctx.outputs[logits].shape;
                (s[1], s[2] - usize::from(softmax))
            }
            // Class ids are values here: only the labels (or `num_classes`) bound them.
            Layout::Final { boxes, .. } => (
                ctx.outputs[boxes].shape[1],
                ctx.cfg.num_classes.unwrap_or(ctx.labels.len()),
            ),
        };
        if !matches!(layout, Layout::Final { .. }) {
            ctx.check_classes(classes)?;
        }
        let pairs = match layout {
            Layout::Split { softmax: false, .. } => queries * classes,
            _ => queries,
        };
        Ok(Self {
            frame: ctx.frame_check(),
            layout,
            classes,
            input_wh: (ctx.input_wh.0 as f32, ctx.input_wh.1 as f32),
            thresholds: ctx.thresholds(classes)?,
            // The authors keep the best Q query-class pairs.
            max: ctx.max_detections().min(queries),
            candidates: Candidates::new(pairs),
        })
    }

    /// A normalised `cx, cy, w, h` box in input pixels.
    fn corners(&self, b: &[f32]) -> BBox {
        let (w, h) = self.input_wh;
        let (cx, cy, bw, bh) = (b[0] * w, b[1] * h, b[2] * w, b[3] * h);
        BBox {
            x1: cx - 0.5 * bw,
            y1: cy - 0.5 * bh,
            x2: cx + 0.5 * bw,
            y2: cy + 0.5 * bh,
        }
    }

    fn push(&mut self, class: usize, score: f32, bbox: BBox) {
        if score > self.thresholds.of(class) {
            self.candidates.push(Detection {
                class_id: class as u16,
                score,
                bbox,
                landmarks: None,
            });
        }
    }
}

impl Decoder for Detr {
    fn decode(&mut self, outputs: &[Output<'_>], out: &mut Detections) -> Result<(), DecodeError> {
        self.frame.check(outputs)?;
        self.candidates.clear();
        let c = self.classes;
        match self.layout {
            Layout::Joined => {
                for row in outputs[0].data.chunks_exact(4 + c) {
                    let (class, score) = argmax(&row[4..]);
                    let bbox = self.corners(&row[..4]);
                    self.push(class, score, bbox);
                }
            }
            Layout::Split {
                boxes,
                logits,
                softmax: false,
            } => {
                let floor = self.thresholds.min();
                let rows = outputs[boxes].data.chunks_exact(4);
                for (b, l) in rows.zip(outputs[logits].data.chunks_exact(c)) {
                    let bbox = self.corners(b);
                    for (class, &logit) in l.iter().enumerate() {
                        let score = sigmoid(logit);
                        if score > floor {
                            self.push(class, score, bbox);
                        }
                    }
                }
            }
            Layout::Split {
                boxes,
                logits,
                softmax: true,
            } => {
                let rows = outputs[boxes].data.chunks_exact(4);
                for (b, l) in rows.zip(outputs[logits].data.chunks_exact(c + 1)) {
                    let top = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = l.iter().map(|&x| (x - top).exp()).sum();
                    let (class, best) = argmax(&l[..c]);
                    let bbox = self.corners(b);
                    self.push(class, (best - top).exp() / sum, bbox);
                }
            }
            Layout::Final {
                labels,
                boxes,
                scores,
            } => {
                let rows = outputs[boxes].data.chunks_exact(4);
                let pairs = outputs[labels].data.iter().zip(outputs[scores].data);
                for ((&label, &score), b) in pairs.zip(rows) {
                    if score.is_nan() || score <= self.thresholds.min() {
                        continue;
                    }
                    let id = label as usize;
                    if !(label >= 0.0 && label.fract() == 0.0 && id < c) {
                        return Err(DecodeError::ClassOutOfRange {
                            output: outputs[labels].name.into(),
                            class: label,
                            classes: c,
                        });
                    }
                    let bbox = BBox {
                        x1: b[0],
                        y1: b[1],
                        x2: b[2],
                        y2: b[3],
                    };
                    self.push(id, score, bbox);
                }
            }
        }
        self.candidates.select(None, self.max, out);
        Ok(())
    }
}

/// What [`recognise`](super::decode::recognise) says of a DETR layout, or `None`.
pub(crate) fn describe(outputs: &[OutputInfo]) -> Option<String> {
    let list = |ix: &[usize]| {
        ix.iter()
            .map(|&i| format!("`{}` {:?}", outputs[i].name, outputs[i].shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(match layout_of(outputs, false).ok()? {
        Layout::Joined => format!(
            "one output {}: {} queries x (4 box + {} class scores), the Ultralytics RT-DETR \
             layout",
            list(&[0]),
            outputs[0].shape[1],
            outputs[0].shape[2] - 4
        ),
        Layout::Split { boxes, logits, .. } => format!(
            "query boxes {} and class logits {}: the DETR/RT-DETR/D-FINE layout (sigmoid \
             scores; set softmax_scores for DETR's \"no object\" class)",
            list(&[boxes]),
            list(&[logits])
        ),
        Layout::Final {
            labels,
            boxes,
            scores,
        } => format!(
            "{}: the postprocessed DETR layout of D-FINE/DEIM/RT-DETR deploy exports",
            list(&[labels, boxes, scores])
        ),
    })
}
