//! Colour conversions for camera frames, bit-exact with OpenCV's `cvtColor`.
//!
//! Inputs are raw byte slices as V4L2 hands them over, described by a [`Layout`]; outputs go into a
//! reusable [`Image`] that is only reallocated when it grows. A buffer of the wrong size is an
//! error, never a panic: camera frames can arrive truncated.

use super::Image;
use super::filter::simd_fn;
use thiserror::Error;

/// Geometry of a raw frame inside its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub width: usize,
    pub height: usize,
    /// Bytes from the start of one row to the next (of the luma plane for NV12); `None` when
    /// rows are packed.
    pub stride: Option<usize>,
}

impl Layout {
    /// Rows packed back to back.
    pub fn packed(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            stride: None,
        }
    }

    /// Rows `stride` bytes apart, as V4L2's `bytesperline` reports.
    pub fn strided(width: usize, height: usize, stride: usize) -> Self {
        Self {
            width,
            height,
            stride: Some(stride),
        }
    }
}

/// Channel order of a three-channel image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Rgb,
    Bgr,
}

/// Why a frame could not be converted.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ColorError {
    /// The buffer does not hold one frame of the stated geometry: the capture was truncated, or
    /// the pixel format, size or stride passed does not match what the device negotiated. Use the
    /// format the driver reports after `VIDIOC_S_FMT`. Padding after the last row is accepted.
    #[error(
        "{format} {width}x{height} (stride {stride}): expected {expected} bytes \
         (at least {min}), found {found}"
    )]
    Size {
        format: &'static str,
        width: usize,
        height: usize,
        stride: usize,
        expected: usize,
        min: usize,
        found: usize,
    },
    /// The stride is shorter than one row of pixels, so rows would overlap: pass the driver's
    /// `bytesperline`, or `Layout::packed`.
    #[error("{format} stride {stride} is shorter than a {width}-pixel row ({row} bytes)")]
    Stride {
        format: &'static str,
        width: usize,
        stride: usize,
        row: usize,
    },
    /// Chroma is shared by pixel pairs (YUYV) or 2×2 blocks (NV12), so those dimensions must be
    /// even: crop the frame or request an even size from the device.
    #[error("{format} needs even dimensions (width{}), got {width}x{height}", if *.both { " and height" } else { "" })]
    OddSize {
        format: &'static str,
        width: usize,
        height: usize,
        both: bool,
    },
}

/// A validated view of a frame: `rows` rows of `row` meaningful bytes, `stride` apart.
struct Rows<'a> {
    data: &'a [u8],
    stride: usize,
    row: usize,
}

impl<'a> Rows<'a> {
    /// Checks `data` holds `rows` rows of `bpp`-byte pixels (the last row may be unpadded, but no
    /// more than one full frame of padding may follow).
    fn new(
        format: &'static str,
        data: &'a [u8],
        layout: Layout,
        bpp: usize,
        rows: usize,
    ) -> Result<Self, ColorError> {
        let row = layout.width * bpp;
        let stride = layout.stride.unwrap_or(row);
        if stride < row {
            return Err(ColorError::Stride {
                format,
                width: layout.width,
                stride,
                row,
            });
        }
        let expected = stride * rows;
        let min = if rows == 0 {
            0
        } else {
            expected - stride + row
        };
        if data.len() < min || data.len() > expected {
            return Err(ColorError::Size {
                format,
                width: layout.width,
                height: layout.height,
                stride,
                expected,
                min,
                found: data.len(),
            });
        }
        Ok(Self { data, stride, row })
    }

    fn row(&self, y: usize) -> &'a [u8] {
        &self.data[y * self.stride..][..self.row]
    }
}

fn require_even(format: &'static str, layout: Layout, both: bool) -> Result<(), ColorError> {
    let odd = !layout.width.is_multiple_of(2) || (both && !layout.height.is_multiple_of(2));
    if odd {
        return Err(ColorError::OddSize {
            format,
            width: layout.width,
            height: layout.height,
            both,
        });
    }
    Ok(())
}

// BT.601 limited range, 20-bit fixed point (OpenCV's ITUR_BT_601_* in color_yuv.simd.hpp):
// R = 1.164(Y-16) + 1.596(V-128), G = 1.164(Y-16) - 0.813(V-128) - 0.391(U-128),
// B = 1.164(Y-16) + 2.018(U-128).
const CY: i32 = 1_220_542;
const CUB: i32 = 2_116_026;
const CUG: i32 = -409_993;
const CVG: i32 = -852_492;
const CVR: i32 = 1_673_527;
const SHIFT: u32 = 20;
const HALF: i32 = 1 << (SHIFT - 1);

/// Two output pixels sharing one U/V pair, in RGB order or (`BGR`) swapped.
#[inline(always)]
fn yuv_pair<const BGR: bool>(y0: u8, y1: u8, u: u8, v: u8, out: &mut [u8]) {
    let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
    let (r, g, b) = (HALF + CVR * v, HALF + CVG * v + CUG * u, HALF + CUB * u);
    let (first, last) = if BGR { (b, r) } else { (r, b) };
    let y0 = (i32::from(y0) - 16).max(0) * CY;
    let y1 = (i32::from(y1) - 16).max(0) * CY;
    let level = |y: i32, c: i32| ((y + c) >> SHIFT).clamp(0, 255) as u8;
    out[0] = level(y0, first);
    out[1] = level(y0, g);
    out[2] = level(y0, last);
    out[3] = level(y1, first);
    out[4] = level(y1, g);
    out[5] = level(y1, last);
}

simd_fn! {
    fn yuyv_row(src: &[u8], order: Order, out: &mut [u8]) {
        let pairs = src.chunks_exact(4).zip(out.chunks_exact_mut(6));
        match order {
            Order::Rgb => {
                for (s, d) in pairs {
                    yuv_pair::<false>(s[0], s[2], s[1], s[3], d);
                }
            }
            Order::Bgr => {
                for (s, d) in pairs {
                    yuv_pair::<true>(s[0], s[2], s[1], s[3], d);
                }
            }
        }
    }
}

simd_fn! {
    fn nv12_row(luma: &[u8], uv: &[u8], order: Order, out: &mut [u8]) {
        let pairs = luma.chunks_exact(2).zip(uv.chunks_exact(2)).zip(out.chunks_exact_mut(6));
        match order {
            Order::Rgb => {
                for ((l, c), d) in pairs {
                    yuv_pair::<false>(l[0], l[1], c[0], c[1], d);
                }
            }
            Order::Bgr => {
                for ((l, c), d) in pairs {
                    yuv_pair::<true>(l[0], l[1], c[0], c[1], d);
                }
            }
        }
    }
}

/// YUYV (YUY2: `Y0 U Y1 V` per pixel pair) to three channels, as `COLOR_YUV2RGB_YUYV` /
/// `COLOR_YUV2BGR_YUYV`.
pub fn yuyv_to_rgb(
    src: &[u8],
    layout: Layout,
    order: Order,
    dst: &mut Image,
) -> Result<(), ColorError> {
    const FORMAT: &str = "YUYV";
    require_even(FORMAT, layout, false)?;
    let rows = Rows::new(FORMAT, src, layout, 2, layout.height)?;
    dst.reshape(layout.width, layout.height, 3);
    for y in 0..layout.height {
        yuyv_row(rows.row(y), order, dst.row_mut(y));
    }
    Ok(())
}

/// NV12 (full-resolution Y plane, then a half-resolution interleaved `U V` plane with the same
/// stride) to three channels, as `COLOR_YUV2RGB_NV12` / `COLOR_YUV2BGR_NV12`.
pub fn nv12_to_rgb(
    src: &[u8],
    layout: Layout,
    order: Order,
    dst: &mut Image,
) -> Result<(), ColorError> {
    const FORMAT: &str = "NV12";
    require_even(FORMAT, layout, true)?;
    let rows = Rows::new(FORMAT, src, layout, 1, layout.height * 3 / 2)?;
    dst.reshape(layout.width, layout.height, 3);
    for y in 0..layout.height {
        nv12_row(
            rows.row(y),
            rows.row(layout.height + y / 2),
            order,
            dst.row_mut(y),
        );
    }
    Ok(())
}

simd_fn! {
    fn grey_row(src: &[u8], out: &mut [u8]) {
        for (&g, d) in src.iter().zip(out.chunks_exact_mut(3)) {
            d.fill(g);
        }
    }
}

/// One grey channel replicated into three, as `COLOR_GRAY2RGB`.
pub fn grey_to_rgb(src: &[u8], layout: Layout, dst: &mut Image) -> Result<(), ColorError> {
    let rows = Rows::new("GREY", src, layout, 1, layout.height)?;
    dst.reshape(layout.width, layout.height, 3);
    for y in 0..layout.height {
        grey_row(rows.row(y), dst.row_mut(y));
    }
    Ok(())
}

simd_fn! {
    fn swap_row(src: &[u8], out: &mut [u8]) {
        for (s, d) in src.chunks_exact(3).zip(out.chunks_exact_mut(3)) {
            d.copy_from_slice(&[s[2], s[1], s[0]]);
        }
    }
}

/// RGB24 to BGR24 or back (`COLOR_RGB2BGR`): swaps the first and third channels.
pub fn swap_rb(src: &[u8], layout: Layout, dst: &mut Image) -> Result<(), ColorError> {
    let rows = Rows::new("RGB24", src, layout, 3, layout.height)?;
    dst.reshape(layout.width, layout.height, 3);
    for y in 0..layout.height {
        swap_row(rows.row(y), dst.row_mut(y));
    }
    Ok(())
}

/// Three-channel rows copied as they are into a packed image, dropping any row padding.
pub fn copy_rgb(src: &[u8], layout: Layout, dst: &mut Image) -> Result<(), ColorError> {
    let rows = Rows::new("RGB24", src, layout, 3, layout.height)?;
    dst.reshape(layout.width, layout.height, 3);
    for y in 0..layout.height {
        dst.row_mut(y).copy_from_slice(rows.row(y));
    }
    Ok(())
}

// OpenCV 5 weights luma in 15-bit fixed point (0.299, 0.587, 0.114 scaled by 2^15, summing to
// 2^15); OpenCV 4 used 14 bits (4899/9617/1868), which differs by one level on ~0.3% of pixels.
const R2Y: u32 = 9798;
const G2Y: u32 = 19235;
const B2Y: u32 = 3735;
const Y_SHIFT: u32 = 15;

simd_fn! {
    /// Luma of one row whose first and third channels are weighted `w0` and `w2`.
    fn luma_row(src: &[u8], w0: u32, w2: u32, out: &mut [u8]) {
        for (s, d) in src.chunks_exact(3).zip(out.iter_mut()) {
            let sum = u32::from(s[0]) * w0 + u32::from(s[1]) * G2Y + u32::from(s[2]) * w2;
            *d = ((sum + (1 << (Y_SHIFT - 1))) >> Y_SHIFT) as u8;
        }
    }
}

/// Three channels to grey, as `COLOR_RGB2GRAY` / `COLOR_BGR2GRAY` (per `order` of the input).
pub fn rgb_to_grey(
    src: &[u8],
    layout: Layout,
    order: Order,
    dst: &mut Image,
) -> Result<(), ColorError> {
    let rows = Rows::new("RGB24", src, layout, 3, layout.height)?;
    let (w0, w2) = match order {
        Order::Rgb => (R2Y, B2Y),
        Order::Bgr => (B2Y, R2Y),
    };
    dst.reshape(layout.width, layout.height, 1);
    for y in 0..layout.height {
        luma_row(rows.row(y), w0, w2, dst.row_mut(y));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_frame_is_an_error_naming_sizes() {
        let mut dst = Image::new(0, 0, 3);
        let err = yuyv_to_rgb(&[0; 10], Layout::packed(4, 2), Order::Rgb, &mut dst).unwrap_err();
        assert_eq!(
            err,
            ColorError::Size {
                format: "YUYV",
                width: 4,
                height: 2,
                stride: 8,
                expected: 16,
                min: 16,
                found: 10
            }
        );
        assert!(err.to_string().contains("expected 16 bytes"), "{err}");
    }

    #[test]
    fn stride_padding_is_skipped_and_last_row_may_be_short() {
        // 2x2 grey, stride 4: rows [1 2 _ _] [3 4].
        let mut dst = Image::new(0, 0, 3);
        grey_to_rgb(&[1, 2, 9, 9, 3, 4], Layout::strided(2, 2, 4), &mut dst).unwrap();
        assert_eq!(dst.data, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
        let short = grey_to_rgb(&[1, 2, 9, 9, 3], Layout::strided(2, 2, 4), &mut dst);
        assert!(matches!(
            short,
            Err(ColorError::Size {
                min: 6,
                expected: 8,
                found: 5,
                ..
            })
        ));
    }

    #[test]
    fn bad_geometry_is_rejected() {
        let mut dst = Image::new(0, 0, 3);
        let odd = nv12_to_rgb(&[0; 9], Layout::packed(2, 3), Order::Bgr, &mut dst);
        assert!(matches!(odd, Err(ColorError::OddSize { both: true, .. })));
        let narrow = swap_rb(&[0; 12], Layout::strided(2, 2, 5), &mut dst);
        assert!(matches!(narrow, Err(ColorError::Stride { row: 6, .. })));
    }

    #[test]
    fn output_buffer_is_reused() {
        let mut dst = Image::new(8, 8, 3);
        let ptr = dst.data.as_ptr();
        swap_rb(&[1, 2, 3, 4, 5, 6], Layout::packed(2, 1), &mut dst).unwrap();
        assert_eq!(dst.data, [3, 2, 1, 6, 5, 4]);
        assert_eq!(dst.data.as_ptr(), ptr);
    }
}
