//! Image files and folders as a frame source.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{CaptureError, Expect, Frame, PixelFormat, Source, decode_jpeg_into};
use crate::imgproc::Image;

/// Why an image file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file or folder could not be read: check the path and permissions.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The content is not what its name says, or is corrupt: re-export the image as PNG or JPEG.
    #[error("{path}: not a valid {kind} image: {reason}")]
    Decode {
        path: PathBuf,
        kind: &'static str,
        reason: String,
    },
    /// The image declares more pixels than `source.max_pixels` allows: it is refused before
    /// anything is allocated for it. Shrink the image, or raise the bound if the board has the
    /// memory (seven bytes per pixel).
    #[error("{path}: {kind} image of {width}x{height} is over the bound of {max_pixels} pixels")]
    TooLarge {
        path: PathBuf,
        kind: &'static str,
        width: u64,
        height: u64,
        max_pixels: u64,
    },
    /// The folder holds no `.png`, `.jpg` or `.jpeg` file.
    #[error("{path}: no PNG or JPEG files in this folder")]
    Empty { path: PathBuf },
}

/// The format a file's extension promises, and the signature its content must start with.
fn kind_of(path: &Path) -> (&'static str, &'static [u8]) {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" => ("JPEG", b"\xff\xd8"),
        _ => ("PNG", b"\x89PNG\r\n\x1a\n"),
    }
}

/// Checks that `path` starts like the image its extension promises, without decoding it.
pub fn check_signature(path: &Path) -> Result<(), ImageError> {
    use std::io::Read;
    let (kind, magic) = kind_of(path);
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|f| f.take(8).read(&mut head))
        .map_err(|source| ImageError::Io {
            path: path.into(),
            source,
        })?;
    if !head[..n].starts_with(magic) {
        return Err(ImageError::Decode {
            path: path.into(),
            kind,
            reason: format!("starts with {:02x?}", &head[..n]),
        });
    }
    Ok(())
}

/// Decodes a PNG or JPEG file (chosen by extension, checked against the content) into RGB.
/// An image declaring more than `max_pixels` pixels is refused from its header, before its
/// pixels are read or allocated; a JPEG file over four bytes per allowed pixel is refused
/// before it is read.
pub fn decode_image(path: &Path, max_pixels: u64, rgb: &mut Image) -> Result<(), ImageError> {
    let (kind, _) = kind_of(path);
    let io = |source| ImageError::Io {
        path: path.into(),
        source,
    };
    let too_large = |width: usize, height: usize| {
        ((width as u64).saturating_mul(height as u64) > max_pixels).then(|| ImageError::TooLarge {
            path: path.into(),
            kind,
            width: width as u64,
            height: height as u64,
            max_pixels,
        })
    };
    let result = match kind {
        "JPEG" => {
            let bytes =
                crate::limits::read_bounded(path, max_pixels.saturating_mul(4)).map_err(io)?;
            decode_jpeg_into(&bytes, Expect::AtMost(&too_large), rgb)
        }
        _ => {
            let file = std::fs::File::open(path).map_err(io)?;
            decode_png_into(std::io::BufReader::new(file), max_pixels, &too_large, rgb)
        }
    };
    result.map_err(|e| match e {
        DecodeFailure::Refused(e) => e,
        DecodeFailure::Corrupt(reason) => ImageError::Decode {
            path: path.into(),
            kind,
            reason,
        },
    })
}

/// Why a decoder stopped: the size check's own error, or the decoder's reason.
pub(crate) enum DecodeFailure {
    Refused(ImageError),
    Corrupt(String),
}

impl std::fmt::Display for DecodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeFailure::Refused(e) => e.fmt(f),
            DecodeFailure::Corrupt(reason) => f.write_str(reason),
        }
    }
}

impl<T: Into<String>> From<T> for DecodeFailure {
    fn from(reason: T) -> Self {
        DecodeFailure::Corrupt(reason.into())
    }
}

fn decode_png_into(
    file: impl std::io::BufRead + std::io::Seek,
    max_pixels: u64,
    too_large: &dyn Fn(usize, usize) -> Option<ImageError>,
    rgb: &mut Image,
) -> Result<(), DecodeFailure> {
    // The decoder's own allocations (rows, chunks) stay within what the pixels need.
    let limits = png::Limits {
        bytes: usize::try_from(max_pixels.saturating_mul(8)).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(file, limits);
    // Colour profiles and text are not used: skip them unread, however large.
    decoder.set_ignore_iccp_chunk(true);
    decoder.set_ignore_text_chunk(true);
    // Expand palettes and low bit depths, strip 16-bit to 8: the detectors want RGB8.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (w, h) = reader.info().size();
    if let Some(e) = too_large(w as usize, h as usize) {
        return Err(DecodeFailure::Refused(e));
    }
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (w, h) = (info.width as usize, info.height as usize);
    rgb.reshape(w, h, 3);
    let src = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    for (dst, px) in rgb.data.chunks_exact_mut(3).zip(src.chunks_exact(channels)) {
        match channels {
            1 | 2 => dst.fill(px[0]),
            _ => dst.copy_from_slice(&px[..3]),
        }
    }
    Ok(())
}

/// Frames from one image file or a folder of them, in name order, once or looping.
pub struct ImagesSource {
    files: Vec<PathBuf>,
    names: Vec<String>,
    looping: bool,
    max_pixels: u64,
    next: usize,
    id: u64,
    start: Instant,
    rgb: Image,
}

impl ImagesSource {
    pub fn open(path: &Path, looping: bool, max_pixels: u64) -> Result<Self, CaptureError> {
        let io = |source| ImageError::Io {
            path: path.into(),
            source,
        };
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let ext = p
                        .extension()
                        .and_then(|e| e.to_str())
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    matches!(ext.as_str(), "png" | "jpg" | "jpeg")
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(ImageError::Empty { path: path.into() }.into());
            }
            files
        } else {
            // A single file is the whole stream: refuse it now rather than run on nothing.
            check_signature(path)?;
            vec![path.to_path_buf()]
        };
        let names = files.iter().map(|f| f.display().to_string()).collect();
        Ok(Self {
            files,
            names,
            looping,
            max_pixels,
            next: 0,
            id: 0,
            start: Instant::now(),
            rgb: Image::new(0, 0, 3),
        })
    }
}

impl Source for ImagesSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.next == self.files.len() {
            if !self.looping {
                return Ok(None);
            }
            self.next = 0;
        }
        let index = self.next;
        self.next += 1;
        let id = self.id;
        self.id += 1;
        decode_image(&self.files[index], self.max_pixels, &mut self.rgb)?;
        Ok(Some(Frame {
            id,
            timestamp_us: self.start.elapsed().as_micros() as u64,
            format: PixelFormat::Rgb24,
            width: self.rgb.width,
            height: self.rgb.height,
            stride: self.rgb.width * 3,
            data: &self.rgb.data,
            origin: &self.names[index],
        }))
    }

    fn describe(&self) -> String {
        format!(
            "{} image file(s){}",
            self.files.len(),
            if self.looping { ", looping" } else { "" }
        )
    }
}
