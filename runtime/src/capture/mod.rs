//! Frame sources: V4L2 cameras, image files and a synthetic test pattern; [`record`] saves
//! what one delivers.
//!
//! A source lends each frame in its native pixel format (for V4L2, straight from the mmap
//! buffer); [`Frame::to_rgb`] converts it into a reused RGB image for the detectors.

mod files;
mod record;
mod synthetic;
mod v4l2;

use std::path::PathBuf;

use crate::config::SourceConfig;
use crate::imgproc::Image;
use crate::imgproc::color::{self, Layout, Order};

pub use files::{ImageError, ImagesSource, decode_image};
pub use record::{RecordError, RecordOptions, RecordSummary, record};
pub use synthetic::SyntheticSource;
pub use v4l2::{V4l2Params, V4l2Source, probe};

/// Pixel layouts a frame can arrive in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 4:2:2, Y0 U Y1 V.
    Yuyv,
    /// Planar Y then interleaved UV at half resolution.
    Nv12,
    Rgb24,
    Bgr24,
    Grey,
    /// One JPEG per frame.
    Mjpeg,
}

impl PixelFormat {
    /// The V4L2 FourCC.
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
            PixelFormat::Rgb24 => *b"RGB3",
            PixelFormat::Bgr24 => *b"BGR3",
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Mjpeg => *b"MJPG",
        }
    }

    pub fn from_fourcc(code: &[u8; 4]) -> Option<Self> {
        [
            Self::Yuyv,
            Self::Nv12,
            Self::Rgb24,
            Self::Bgr24,
            Self::Grey,
            Self::Mjpeg,
        ]
        .into_iter()
        .find(|f| &f.fourcc() == code)
    }

    /// Bytes a whole frame needs at least (None for compressed formats).
    pub fn frame_len(self, height: usize, stride: usize) -> Option<usize> {
        match self {
            PixelFormat::Nv12 => Some(stride * height + stride * height.div_ceil(2)),
            PixelFormat::Mjpeg => None,
            _ => Some(stride * height),
        }
    }

    /// Bytes per row without padding.
    pub fn min_stride(self, width: usize) -> usize {
        match self {
            PixelFormat::Yuyv => width * 2,
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => width * 3,
            PixelFormat::Nv12 | PixelFormat::Grey | PixelFormat::Mjpeg => width,
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.fourcc()).unwrap_or("????"))
    }
}

/// One frame, borrowed from its source until the next call to [`Source::next_frame`].
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Counts frames from the source's start, without gaps for delivered frames.
    pub id: u64,
    /// Capture time in microseconds (the driver's clock for V4L2, monotonic otherwise).
    pub timestamp_us: u64,
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    /// Bytes per row (of the luma plane for NV12).
    pub stride: usize,
    pub data: &'a [u8],
    /// Where the frame came from, for error messages (a file name, a device path).
    pub origin: &'a str,
}

impl Frame<'_> {
    /// Converts into `rgb` (resized as needed, allocation reused). Truncated or corrupt frames
    /// give an error naming the frame, never a panic.
    pub fn to_rgb(&self, rgb: &mut Image) -> Result<(), CaptureError> {
        let bad = |reason: String| CaptureError::BadFrame {
            origin: self.origin.to_string(),
            id: self.id,
            reason,
        };
        match self.format {
            PixelFormat::Mjpeg => {
                decode_jpeg_into(self.data, Expect::Exactly(self.width, self.height), rgb)
                    .map_err(|e| bad(format!("MJPEG: {e}")))
            }
            format => {
                let layout = Layout::strided(self.width, self.height, self.stride);
                match format {
                    PixelFormat::Yuyv => color::yuyv_to_rgb(self.data, layout, Order::Rgb, rgb),
                    PixelFormat::Nv12 => color::nv12_to_rgb(self.data, layout, Order::Rgb, rgb),
                    PixelFormat::Grey => color::grey_to_rgb(self.data, layout, rgb),
                    PixelFormat::Bgr24 => color::swap_rb(self.data, layout, rgb),
                    PixelFormat::Rgb24 | PixelFormat::Mjpeg => {
                        color::copy_rgb(self.data, layout, rgb)
                    }
                }
                .map_err(|e| bad(e.to_string()))
            }
        }
    }
}

/// What size a JPEG may declare.
pub(crate) enum Expect<'a> {
    /// A camera frame: exactly the negotiated width and height.
    Exactly(usize, usize),
    /// An image file: whatever size this check does not refuse.
    AtMost(&'a dyn Fn(usize, usize) -> Option<ImageError>),
}

/// Decodes a JPEG into `rgb`. The size its header declares is checked against `expect`
/// before anything is allocated for it, so a corrupt header cannot make a frame cost gigabytes.
pub(crate) fn decode_jpeg_into(
    data: &[u8],
    expect: Expect,
    rgb: &mut Image,
) -> Result<(), files::DecodeFailure> {
    use zune_jpeg::JpegDecoder;
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    // Strict for camera frames: a truncated frame is dropped, not passed on half grey.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_strict_mode(matches!(expect, Expect::Exactly(..)))
        // zune-jpeg's own cap (16384 per side by default) would refuse some allowed sizes.
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    decoder.decode_headers().map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions().ok_or("no dimensions in JPEG header")?;
    match expect {
        Expect::Exactly(ew, eh) if (w, h) != (ew, eh) => {
            return Err(format!("JPEG is {w}x{h}, the stream is {ew}x{eh}").into());
        }
        Expect::AtMost(too_large) => {
            if let Some(e) = too_large(w, h) {
                return Err(files::DecodeFailure::Refused(e));
            }
        }
        Expect::Exactly(..) => {}
    }
    rgb.reshape(w, h, 3);
    decoder
        .decode_into(&mut rgb.data)
        .map_err(|e| e.to_string().into())
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The camera could not be opened or configured: check the device path, that it is a
    /// capture device, and that the user is in the `video` group.
    #[error("{device}: {what}: {source}")]
    Device {
        device: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The camera offers none of the pixel formats Ocelli converts (YUYV, MJPG, NV12, RGB3,
    /// BGR3, GREY), or not the one configured: pick one `ocelli probe` lists.
    #[error("{device}: no usable pixel format: {detail}")]
    Format { device: PathBuf, detail: String },
    /// The camera stopped delivering: unplugged (ENODEV) or silent past the timeout.
    #[error("{device}: camera lost: {source}")]
    Lost {
        device: PathBuf,
        source: std::io::Error,
    },
    /// An image file could not be read or decoded: fix or remove the file.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// One frame is truncated or corrupt: it is dropped and counted, the stream goes on.
    #[error("{origin}: frame {id}: {reason}")]
    BadFrame {
        origin: String,
        id: u64,
        reason: String,
    },
}

impl CaptureError {
    /// Whether the stream can go on after this error (skipping the frame or file).
    pub fn is_frame_local(&self) -> bool {
        matches!(self, CaptureError::BadFrame { .. } | CaptureError::Image(_))
    }

    /// Whether the camera went away: the source can be reopened.
    pub fn is_lost(&self) -> bool {
        matches!(self, CaptureError::Lost { .. })
    }
}

/// A stream of frames.
pub trait Source {
    /// The next frame, `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError>;

    /// Closes and opens the device again after a loss; frame ids go on from where they were.
    fn reopen(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }

    /// A short description for logs.
    fn describe(&self) -> String;
}

/// Opens the source a config describes, resolving relative paths with `resolve`. A camera
/// silent for `frame_timeout` counts as lost.
pub fn open(
    config: &SourceConfig,
    frame_timeout: std::time::Duration,
    resolve: impl Fn(&std::path::Path) -> PathBuf,
) -> Result<Box<dyn Source>, CaptureError> {
    Ok(match config {
        SourceConfig::V4l2 {
            device,
            format,
            width,
            height,
            fps,
            buffers,
        } => Box::new(V4l2Source::open(V4l2Params {
            device: device.clone(),
            format: format.clone(),
            width: *width,
            height: *height,
            fps: *fps,
            buffers: *buffers,
            timeout: frame_timeout,
        })?),
        SourceConfig::Images {
            path,
            looping,
            max_pixels,
        } => Box::new(ImagesSource::open(&resolve(path), *looping, *max_pixels)?),
        SourceConfig::Synthetic {
            width,
            height,
            frames,
            faults,
            fps,
        } => Box::new(
            SyntheticSource::new(
                *width as usize,
                *height as usize,
                PixelFormat::Yuyv,
                *frames,
            )
            .with_faults(faults)
            .with_fps(*fps),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(format: PixelFormat, stride: usize, data: &[u8]) -> Frame<'_> {
        Frame {
            id: 7,
            timestamp_us: 0,
            format,
            width: 2,
            height: 2,
            stride,
            data,
            origin: "test",
        }
    }

    #[test]
    fn padded_rgb24_and_bgr24_rows_become_packed_rgb() {
        // Two rows of two pixels, each row padded by two bytes.
        let data = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        let mut rgb = Image::new(0, 0, 3);
        frame(PixelFormat::Rgb24, 8, &data)
            .to_rgb(&mut rgb)
            .unwrap();
        assert_eq!(rgb.data, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        frame(PixelFormat::Bgr24, 8, &data)
            .to_rgb(&mut rgb)
            .unwrap();
        assert_eq!(rgb.data, [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
    }

    #[test]
    fn truncated_frames_are_errors_naming_the_frame() {
        let mut rgb = Image::new(0, 0, 3);
        for format in [
            PixelFormat::Yuyv,
            PixelFormat::Nv12,
            PixelFormat::Rgb24,
            PixelFormat::Grey,
            PixelFormat::Mjpeg,
        ] {
            let err = frame(format, format.min_stride(2), &[1, 2, 3])
                .to_rgb(&mut rgb)
                .unwrap_err();
            assert!(
                matches!(err, CaptureError::BadFrame { id: 7, .. }),
                "{format}: {err}"
            );
        }
    }
}
