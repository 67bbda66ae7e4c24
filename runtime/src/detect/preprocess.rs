//! A frame becomes the model's input tensor: resize (letterbox or stretch), channel order,
//! mean and std, NCHW.

use crate::config::{ChannelOrder, PadPlacement, PreprocessConfig, ResizeMode};
use crate::imgproc::Image;
use crate::imgproc::geometry;

/// How model-input coordinates relate to the source image: `model = source * scale + pad`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

/// Writes `rgb` into `input` (an `[1,3,H,W]` f32 buffer for `input_wh`) as `cfg` says, and
/// returns the transform that maps detections back to the source image.
pub fn fill_input(cfg: &PreprocessConfig, rgb: &Image, input_wh: (usize, usize), input: &mut [f32]) -> Transform {
    let (w, h) = input_wh;
    let (sw, sh) = (rgb.width as f32, rgb.height as f32);
    // Boxes map back with the ratio itself, as the model authors' samples do, not with the
    // rounded resized size.
    let (rw, rh, pad_x, pad_y, scale_x, scale_y) = match cfg.resize {
        ResizeMode::Stretch => (w, h, 0, 0, w as f32 / sw, h as f32 / sh),
        ResizeMode::Letterbox => {
            let r = (w as f32 / sw).min(h as f32 / sh);
            let (rw, rh) = (((sw * r) as usize).clamp(1, w), ((sh * r) as usize).clamp(1, h));
            let (px, py) = match cfg.pad {
                PadPlacement::TopLeft => (0, 0),
                PadPlacement::Center => ((w - rw) / 2, (h - rh) / 2),
            };
            (rw, rh, px, py, r, r)
        }
    };
    geometry::resize_to_nchw(
        rgb,
        geometry::NchwTarget {
            width: w,
            height: h,
            roi: (pad_x, pad_y, rw, rh),
            pad_value: cfg.pad_value,
            swap_rb: cfg.channels == ChannelOrder::Bgr,
            mean: cfg.mean,
            std: cfg.std,
        },
        input,
    );
    Transform { scale_x, scale_y, pad_x: pad_x as f32, pad_y: pad_y as f32 }
}
