//! Annotated frames shown on a Linux framebuffer (`/dev/fb0`), for boards with a screen.
//!
//! The geometry and pixel layout come from the `FBIOGET_VSCREENINFO` and
//! `FBIOGET_FSCREENINFO` ioctls; each frame is letterboxed (aspect kept, black bars) to the
//! visible screen, packed into the screen's format (any layout of 16 bpp, such as RGB565, or
//! of 32 bpp, such as XRGB8888) and written in one `pwrite`. With `geometry` configured, the
//! device is taken to be a regular file of that geometry and no ioctl is made: that is how the
//! tests, and a headless board, look at what a screen would show.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::imgproc::Image;
use crate::imgproc::geometry::{self, Interpolation, Placement};

/// Why the framebuffer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FramebufferError {
    /// The device could not be opened: check it exists (a display driver is loaded) and that
    /// the service's user may write it (the `video` group).
    #[error("{path}: cannot open framebuffer: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The screen info ioctls failed: the path is not a framebuffer device. For a regular
    /// file, configure `geometry`.
    #[error(
        "{path}: not a framebuffer ({source}); set output.framebuffer.geometry for a regular file"
    )]
    Ioctl { path: PathBuf, source: nix::Error },
    /// The screen's pixel format is not one Ocelli packs.
    #[error("{path}: {bits_per_pixel} bits per pixel is not supported, expected 16 or 32")]
    Format { path: PathBuf, bits_per_pixel: u32 },
    /// A frame could not be written: the device went away, or the file is too small.
    #[error("{path}: cannot write frame: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The geometry of a regular file standing in for a framebuffer device.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    /// 16 (RGB565) or 32 (XRGB8888).
    pub bits_per_pixel: u32,
    /// Bytes per row; defaults to `width × bits_per_pixel / 8`.
    #[serde(default)]
    pub line_length: Option<u32>,
}

/// The `[output.framebuffer]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FramebufferConfig {
    #[serde(default = "default_device")]
    pub device: PathBuf,
    /// Set for a regular file: its geometry, instead of asking the device.
    #[serde(default)]
    pub geometry: Option<Geometry>,
}

fn default_device() -> PathBuf {
    "/dev/fb0".into()
}

/// Where a colour channel sits in a pixel: bit offset and bit count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Channel {
    offset: u32,
    length: u32,
}

impl Channel {
    fn pack(self, v: u8) -> u32 {
        (u32::from(v) >> (8 - self.length.min(8))) << self.offset
    }
}

/// The visible screen: size, layout in memory and pixel format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Screen {
    pub width: usize,
    pub height: usize,
    /// Bytes per row, and where the visible area starts.
    pub line_length: usize,
    pub offset: u64,
    /// 2 or 4.
    pub bytes_per_pixel: usize,
    rgb: [Channel; 3],
}

impl Screen {
    fn from_geometry(g: &Geometry) -> Option<Self> {
        let c = |offset, length| Channel { offset, length };
        let (bytes_per_pixel, rgb) = match g.bits_per_pixel {
            16 => (2, [c(11, 5), c(5, 6), c(0, 5)]),
            32 => (4, [c(16, 8), c(8, 8), c(0, 8)]),
            _ => return None,
        };
        Some(Self {
            width: g.width as usize,
            height: g.height as usize,
            line_length: g
                .line_length
                .map_or(g.width as usize * bytes_per_pixel, |l| l as usize),
            offset: 0,
            bytes_per_pixel,
            rgb,
        })
    }

    /// `(r, g, b)` as this screen's pixel bytes (native endian, as the display reads them).
    pub fn pack(&self, r: u8, g: u8, b: u8) -> u32 {
        let [cr, cg, cb] = self.rgb;
        cr.pack(r) | cg.pack(g) | cb.pack(b)
    }
}

/// `linux/fb.h`.
mod sys {
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct Bitfield {
        pub offset: u32,
        pub length: u32,
        pub msb_right: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct VarScreeninfo {
        pub xres: u32,
        pub yres: u32,
        pub xres_virtual: u32,
        pub yres_virtual: u32,
        pub xoffset: u32,
        pub yoffset: u32,
        pub bits_per_pixel: u32,
        pub grayscale: u32,
        pub red: Bitfield,
        pub green: Bitfield,
        pub blue: Bitfield,
        pub transp: Bitfield,
        pub nonstd: u32,
        pub activate: u32,
        pub height: u32,
        pub width: u32,
        pub accel_flags: u32,
        pub timing: [u32; 11],
        pub reserved: [u32; 4],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct FixScreeninfo {
        pub id: [u8; 16],
        pub smem_start: std::ffi::c_ulong,
        pub smem_len: u32,
        pub kind: u32,
        pub type_aux: u32,
        pub visual: u32,
        pub xpanstep: u16,
        pub ypanstep: u16,
        pub ywrapstep: u16,
        pub line_length: u32,
        pub mmio_start: std::ffi::c_ulong,
        pub mmio_len: u32,
        pub accel: u32,
        pub capabilities: u16,
        pub reserved: [u16; 2],
    }

    nix::ioctl_read_bad!(get_vscreeninfo, 0x4600, VarScreeninfo);
    nix::ioctl_read_bad!(get_fscreeninfo, 0x4602, FixScreeninfo);
}

/// An open framebuffer and the buffers a frame is prepared in.
#[derive(Debug)]
pub struct Framebuffer {
    file: File,
    path: PathBuf,
    screen: Screen,
    scaled: Image,
    pixels: Vec<u8>,
}

impl Framebuffer {
    /// Opens the device (or file) of `config` and learns its geometry.
    pub fn open(config: &FramebufferConfig, path: PathBuf) -> Result<Self, FramebufferError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| FramebufferError::Open {
                path: path.clone(),
                source,
            })?;
        let screen = match &config.geometry {
            Some(g) => Screen::from_geometry(g).ok_or(FramebufferError::Format {
                path: path.clone(),
                bits_per_pixel: g.bits_per_pixel,
            })?,
            None => query(&file, &path)?,
        };
        Ok(Self {
            file,
            path,
            screen,
            scaled: Image::new(0, 0, 3),
            pixels: vec![0; screen.line_length * screen.height],
        })
    }

    pub fn screen(&self) -> &Screen {
        &self.screen
    }

    /// Shows the RGB frame `rgb`, letterboxed to the screen.
    pub fn show(&mut self, rgb: &Image) -> Result<(), FramebufferError> {
        let s = self.screen;
        let write_err = |source| FramebufferError::Write {
            path: self.path.clone(),
            source,
        };
        geometry::letterbox(
            rgb,
            s.width,
            s.height,
            Placement::Centre,
            0,
            Interpolation::Linear,
            &mut self.scaled,
        )
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        for (y, row) in self.pixels.chunks_exact_mut(s.line_length).enumerate() {
            let src = self.scaled.row(y);
            let out = row[..s.width * s.bytes_per_pixel].chunks_exact_mut(s.bytes_per_pixel);
            for (px, rgb) in out.zip(src.chunks_exact(3)) {
                let v = s.pack(rgb[0], rgb[1], rgb[2]);
                px.copy_from_slice(&v.to_ne_bytes()[..s.bytes_per_pixel]);
            }
        }
        self.file
            .write_all_at(&self.pixels, s.offset)
            .map_err(write_err)
    }
}

/// The screen of framebuffer device `file`.
fn query(file: &File, path: &std::path::Path) -> Result<Screen, FramebufferError> {
    use std::os::fd::AsRawFd;
    let mut var = sys::VarScreeninfo::default();
    let mut fix = sys::FixScreeninfo::default();
    let ioctl_err = |source| FramebufferError::Ioctl {
        path: path.into(),
        source,
    };
    // SAFETY: both structs are `linux/fb.h`'s, which the kernel fills and nothing else.
    unsafe {
        sys::get_vscreeninfo(file.as_raw_fd(), &mut var).map_err(ioctl_err)?;
        sys::get_fscreeninfo(file.as_raw_fd(), &mut fix).map_err(ioctl_err)?;
    }
    let bytes_per_pixel = match var.bits_per_pixel {
        16 => 2,
        32 => 4,
        bits_per_pixel => {
            return Err(FramebufferError::Format {
                path: path.into(),
                bits_per_pixel,
            });
        }
    };
    let c = |b: sys::Bitfield| Channel {
        offset: b.offset,
        length: b.length,
    };
    Ok(Screen {
        width: var.xres as usize,
        height: var.yres as usize,
        line_length: fix.line_length as usize,
        offset: u64::from(var.yoffset) * u64::from(fix.line_length)
            + u64::from(var.xoffset) * bytes_per_pixel as u64,
        bytes_per_pixel,
        rgb: [c(var.red), c(var.green), c(var.blue)],
    })
}
