//! Motion gating: difference against a running average → threshold → dilate → connected
//! components → motion boxes, on a downscaled grey copy of the frame.
//!
//! The pipeline runs its detectors only when the moving area passes a bound, so a board idles
//! while nothing moves. All buffers are kept between frames.

use serde::Deserialize;

use super::Image;
use super::color::{self, Layout, Order};
use super::geometry::{self, Interpolation};
use super::morph::{Border, MorphOp, Morphology, Shape, StructuringElement};
use super::regions::{self, ComponentStats, Connectivity};
use super::threshold::{ThresholdType, threshold};
use crate::detect::BBox;

/// Most motion regions reported per frame; the largest are kept.
pub const MAX_REGIONS: usize = 32;

/// The `[imaging.motion]` table of the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Grey-level difference from the running average that counts as change.
    pub threshold: u8,
    /// Fraction of the frame that must change for the detectors to run.
    pub min_area: f32,
    /// Weight of the newest frame in the running average (OpenCV's `accumulateWeighted`).
    pub alpha: f32,
    /// The frame is shrunk by this factor first (area interpolation): noise drops, time too.
    pub downscale: usize,
    /// Side of the square dilation that joins nearby changes, in downscaled pixels.
    pub dilate: usize,
    /// Regions smaller than this many downscaled pixels are ignored.
    pub min_region: usize,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            threshold: 25,
            min_area: 0.002,
            alpha: 0.05,
            downscale: 4,
            dilate: 5,
            min_region: 4,
        }
    }
}

/// Why the motion gate could not run.
#[derive(Debug, thiserror::Error)]
pub enum MotionError {
    /// A setting is out of range: `downscale` and `dilate` at least 1, `alpha` in (0, 1].
    #[error("motion: {0}")]
    Config(String),
    #[error("motion: {0}")]
    Color(#[from] color::ColorError),
    #[error("motion: {0}")]
    Geometry(#[from] geometry::GeometryError),
    #[error("motion: {0}")]
    Morph(#[from] super::morph::MorphError),
    #[error("motion: {0}")]
    Threshold(#[from] super::threshold::ThresholdError),
    #[error("motion: {0}")]
    Regions(#[from] regions::RegionError),
}

/// What the gate saw on one frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MotionResult {
    /// Fraction of the frame that changed, in `[0, 1]`.
    pub area: f32,
    /// Changed regions in source-image pixels, largest first.
    pub regions: heapless::Vec<BBox, MAX_REGIONS>,
    /// Whether the area passed `min_area`.
    pub moving: bool,
}

/// The running state of the gate.
pub struct MotionGate {
    config: MotionConfig,
    dilation: Morphology,
    grey: Image,
    small: Image,
    average: Vec<f32>,
    diff: Image,
    mask: Image,
    dilated: Image,
    labeler: regions::Labeler,
    labels: Image<i32>,
    stats: Vec<ComponentStats>,
}

impl MotionGate {
    pub fn new(config: MotionConfig) -> Result<Self, MotionError> {
        if config.downscale == 0
            || config.dilate == 0
            || !(config.alpha > 0.0 && config.alpha <= 1.0)
        {
            return Err(MotionError::Config(format!(
                "downscale {} and dilate {} must be ≥ 1, alpha {} in (0, 1]",
                config.downscale, config.dilate, config.alpha
            )));
        }
        let kernel = StructuringElement::new(Shape::Rect, config.dilate, config.dilate, None)?;
        let dilation = Morphology::new(MorphOp::Dilate, &kernel, None, 1, Border::default())?;
        Ok(Self {
            config,
            dilation,
            grey: Image::new(0, 0, 1),
            small: Image::new(0, 0, 1),
            average: Vec::new(),
            diff: Image::new(0, 0, 1),
            mask: Image::new(0, 0, 1),
            dilated: Image::new(0, 0, 1),
            labeler: regions::Labeler::default(),
            labels: Image::new(0, 0, 1),
            stats: Vec::new(),
        })
    }

    /// Feeds one RGB frame; the first frame (or a change of size) only primes the average.
    pub fn update(&mut self, rgb: &Image, out: &mut MotionResult) -> Result<(), MotionError> {
        let layout = Layout::packed(rgb.width, rgb.height);
        color::rgb_to_grey(&rgb.data, layout, Order::Rgb, &mut self.grey)?;
        let d = self.config.downscale;
        let (w, h) = ((rgb.width / d).max(1), (rgb.height / d).max(1));
        geometry::resize(&self.grey, w, h, Interpolation::Area, &mut self.small)?;
        out.regions.clear();
        out.area = 0.0;
        out.moving = false;
        if self.average.len() != w * h {
            self.average.clear();
            self.average
                .extend(self.small.data.iter().map(|&v| f32::from(v)));
            return Ok(());
        }
        self.diff.reshape(w, h, 1);
        let a = self.config.alpha;
        for ((avg, &px), diff) in self
            .average
            .iter_mut()
            .zip(&self.small.data)
            .zip(&mut self.diff.data)
        {
            // absdiff against the average as OpenCV's convertScaleAbs would round it.
            *diff = (f32::from(px) - avg.round_ties_even()).abs() as u8;
            *avg = (1.0 - a) * *avg + a * f32::from(px);
        }
        threshold(
            &self.diff,
            &mut self.mask,
            f64::from(self.config.threshold),
            255.0,
            ThresholdType::Binary,
        )?;
        self.dilation.apply(&self.mask, &mut self.dilated)?;
        let changed = self.mask.data.iter().filter(|&&v| v != 0).count();
        out.area = changed as f32 / (w * h) as f32;
        out.moving = out.area > self.config.min_area;
        self.labeler.label(
            &self.dilated,
            &mut self.labels,
            &mut self.stats,
            Connectivity::Eight,
        )?;
        // Largest first, so the bound keeps what matters.
        self.stats[1..].sort_unstable_by_key(|s| std::cmp::Reverse(s.area));
        let (sx, sy) = (rgb.width as f32 / w as f32, rgb.height as f32 / h as f32);
        for (_, b) in
            regions::region_boxes(&self.stats, self.config.min_region as i32).take(MAX_REGIONS)
        {
            let _ = out.regions.push(BBox {
                x1: b.x1 * sx,
                y1: b.y1 * sy,
                x2: b.x2 * sx,
                y2: b.y2 * sy,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(square_at: Option<(usize, usize)>) -> Image {
        let mut img = Image::new(160, 120, 3);
        img.data.fill(40);
        if let Some((x0, y0)) = square_at {
            for y in y0..y0 + 20 {
                for x in x0..x0 + 20 {
                    img.data[(y * 160 + x) * 3..][..3].fill(220);
                }
            }
        }
        img
    }

    #[test]
    fn a_still_scene_does_not_move_and_a_new_object_does() {
        let mut gate = MotionGate::new(MotionConfig::default()).unwrap();
        let mut out = MotionResult::default();
        for _ in 0..3 {
            gate.update(&frame(None), &mut out).unwrap();
            assert!(!out.moving && out.regions.is_empty(), "{out:?}");
        }
        gate.update(&frame(Some((80, 40))), &mut out).unwrap();
        assert!(out.moving, "{out:?}");
        assert_eq!(out.regions.len(), 1, "{out:?}");
        let r = out.regions[0];
        // The square spans 80..100 × 40..60; dilation by 5 (downscaled ×4) widens it by ≤ 8 px.
        assert!(
            r.x1 >= 70.0 && r.x1 <= 80.0 && r.x2 >= 100.0 && r.x2 <= 110.0,
            "{r:?}"
        );
        assert!(
            r.y1 >= 30.0 && r.y1 <= 40.0 && r.y2 >= 60.0 && r.y2 <= 70.0,
            "{r:?}"
        );
        assert!((out.area - 400.0 / (160.0 * 120.0)).abs() < 0.01, "{out:?}");
    }

    #[test]
    fn bad_settings_are_refused() {
        for config in [
            MotionConfig {
                downscale: 0,
                ..Default::default()
            },
            MotionConfig {
                alpha: 0.0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                MotionGate::new(config),
                Err(MotionError::Config(_))
            ));
        }
    }
}
