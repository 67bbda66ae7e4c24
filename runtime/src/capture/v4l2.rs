//! V4L2 cameras through the v4l crate: format negotiation and mmap streaming.

use std::path::PathBuf;
use std::time::Duration;

use v4l::buffer::Type;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{CaptureError, Frame, PixelFormat, Source};

/// Formats tried, in order, when the config names none: cheapest conversion first.
const PREFERRED: [PixelFormat; 6] = [
    PixelFormat::Yuyv,
    PixelFormat::Nv12,
    PixelFormat::Rgb24,
    PixelFormat::Bgr24,
    PixelFormat::Grey,
    PixelFormat::Mjpeg,
];

/// What to open and ask for; kept to reopen the camera after a loss.
#[derive(Clone, Debug, PartialEq)]
pub struct V4l2Params {
    pub device: PathBuf,
    /// FourCC to ask for; `None` picks the first of [`PREFERRED`] the device offers.
    pub format: Option<String>,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub buffers: u32,
    /// A camera silent this long counts as lost.
    pub timeout: Duration,
}

/// A streaming V4L2 capture device. Frames borrow the driver's mmap buffer: no copy.
pub struct V4l2Source {
    params: V4l2Params,
    origin: String,
    id: u64,
    live: Option<Live>,
}

/// An open device and its running stream.
struct Live {
    format: PixelFormat,
    width: usize,
    height: usize,
    stride: usize,
    // Declared before `device` so the stream (which stops capture on drop) goes first.
    stream: Stream<'static>,
    _device: Device,
}

impl V4l2Source {
    pub fn open(params: V4l2Params) -> Result<Self, CaptureError> {
        let live = Live::open(&params)?;
        Ok(Self {
            origin: params.device.display().to_string(),
            params,
            id: 0,
            live: Some(live),
        })
    }
}

impl Live {
    fn open(p: &V4l2Params) -> Result<Self, CaptureError> {
        let path = p.device.as_path();
        let dev_err = |what| {
            move |source| CaptureError::Device {
                device: path.into(),
                what,
                source,
            }
        };
        let device = Device::with_path(path).map_err(dev_err("open"))?;
        let offered: Vec<PixelFormat> = device
            .enum_formats()
            .map_err(dev_err("list formats"))?
            .iter()
            .filter_map(|d| PixelFormat::from_fourcc(&d.fourcc.repr))
            .collect();
        let format_err = |detail: String| CaptureError::Format {
            device: path.into(),
            detail,
        };
        let wanted = match p.format.as_deref() {
            Some(name) => {
                let code: [u8; 4] = name
                    .as_bytes()
                    .try_into()
                    .map_err(|_| format_err(format!("{name:?} is not a four-character code")))?;
                let f = PixelFormat::from_fourcc(&code)
                    .ok_or_else(|| format_err(format!("{name} is not one Ocelli converts")))?;
                if !offered.contains(&f) {
                    return Err(format_err(format!(
                        "{name} is not offered (offered: {})",
                        list(&offered)
                    )));
                }
                f
            }
            None => *PREFERRED
                .iter()
                .find(|f| offered.contains(f))
                .ok_or_else(|| {
                    format_err(
                        "the device offers none of YUYV, NV12, RGB3, BGR3, GREY, MJPG".into(),
                    )
                })?,
        };
        let mut fmt = device.format().map_err(dev_err("get format"))?;
        fmt.width = p.width;
        fmt.height = p.height;
        fmt.fourcc = FourCC::new(&wanted.fourcc());
        let fmt = device.set_format(&fmt).map_err(dev_err("set format"))?;
        let format = PixelFormat::from_fourcc(&fmt.fourcc.repr)
            .ok_or_else(|| format_err(format!("driver switched to {}", fmt.fourcc)))?;
        // Not every driver supports frame intervals; the driver's default rate is fine then.
        let _ = device.set_params(&v4l::video::capture::Parameters::with_fps(p.fps));
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, p.buffers.max(2))
            .map_err(dev_err("map buffers"))?;
        stream.set_timeout(p.timeout);
        let (w, h) = (fmt.width as usize, fmt.height as usize);
        Ok(Self {
            format,
            width: w,
            height: h,
            stride: (fmt.stride as usize).max(format.min_stride(w)),
            stream,
            _device: device,
        })
    }
}

fn list(formats: &[PixelFormat]) -> String {
    formats
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Source for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let lost = |source| CaptureError::Lost {
            device: self.params.device.clone(),
            source,
        };
        let Some(live) = self.live.as_mut() else {
            return Err(lost(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "not open",
            )));
        };
        // ENODEV (unplugged, driver unloaded) or a silence past the timeout; `reopen` recovers.
        let (buf, meta) = live.stream.next().map_err(lost)?;
        let id = self.id;
        self.id += 1;
        let used = (meta.bytesused as usize).min(buf.len());
        Ok(Some(Frame {
            id,
            timestamp_us: (meta.timestamp.sec as u64) * 1_000_000 + meta.timestamp.usec as u64,
            format: live.format,
            width: live.width,
            height: live.height,
            stride: live.stride,
            data: &buf[..used],
            origin: &self.origin,
        }))
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        // The old stream and descriptor go first: the device may only be opened once.
        self.live = None;
        self.live = Some(Live::open(&self.params)?);
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.live {
            Some(l) => format!("{} {}x{} {}", self.origin, l.width, l.height, l.format),
            None => format!("{} (lost)", self.origin),
        }
    }
}

/// Lists every V4L2 capture device with its formats, sizes and frame intervals, in the manner
/// of `v4l2-ctl --list-formats-ext`.
pub fn probe(out: &mut impl std::io::Write, devices: &[PathBuf]) -> std::io::Result<usize> {
    let mut found = 0;
    let paths: Vec<PathBuf> = if devices.is_empty() {
        let mut v: Vec<PathBuf> = std::fs::read_dir("/dev")?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("video"))
            })
            .collect();
        v.sort();
        v
    } else {
        devices.to_vec()
    };
    for path in paths {
        let Ok(device) = Device::with_path(&path) else {
            writeln!(out, "{}: cannot open", path.display())?;
            continue;
        };
        let Ok(caps) = device.query_caps() else {
            continue;
        };
        let Ok(formats) = device.enum_formats() else {
            continue;
        };
        if formats.is_empty() {
            continue;
        }
        found += 1;
        writeln!(
            out,
            "{}: {} ({}, {})",
            path.display(),
            caps.card,
            caps.driver,
            caps.bus
        )?;
        for (i, f) in formats.iter().enumerate() {
            let support = if PixelFormat::from_fourcc(&f.fourcc.repr).is_some() {
                ""
            } else {
                " (not converted)"
            };
            writeln!(out, "\t[{i}]: '{}' ({}){support}", f.fourcc, f.description)?;
            for size in device.enum_framesizes(f.fourcc).unwrap_or_default() {
                match size.size {
                    FrameSizeEnum::Discrete(d) => {
                        writeln!(out, "\t\tSize: Discrete {}x{}", d.width, d.height)?;
                        for iv in device
                            .enum_frameintervals(f.fourcc, d.width, d.height)
                            .unwrap_or_default()
                        {
                            match iv.interval {
                                FrameIntervalEnum::Discrete(fr) => writeln!(
                                    out,
                                    "\t\t\tInterval: Discrete {:.3}s ({:.3} fps)",
                                    fr.numerator as f64 / fr.denominator as f64,
                                    fr.denominator as f64 / fr.numerator as f64
                                )?,
                                FrameIntervalEnum::Stepwise(s) => {
                                    writeln!(out, "\t\t\tInterval: Stepwise {} - {}", s.min, s.max)?
                                }
                            }
                        }
                    }
                    FrameSizeEnum::Stepwise(s) => writeln!(
                        out,
                        "\t\tSize: Stepwise {}x{} - {}x{} with step {}/{}",
                        s.min_width,
                        s.min_height,
                        s.max_width,
                        s.max_height,
                        s.step_width,
                        s.step_height
                    )?,
                }
            }
        }
    }
    Ok(found)
}
