//! The one TOML file that describes a device: board, source, detectors and outputs.
//!
//! Every field is documented in `docs/config.md`. Errors name the file, the key and its line,
//! what was found and what was expected.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::detect::{DecodeConfig, Family};
use crate::emit::{HttpConfig, MqttConfig, SocketConfig};
use crate::imgproc::geometry;
use crate::imgproc::motion::MotionConfig;

/// Why a config was rejected. Displayed as one line: `FILE:LINE: key: problem`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read, is over 1 MiB or is not UTF-8: check the path, its
    /// permissions and its content.
    #[error("{file}: cannot read config: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown or misspelt, or a value has the wrong type.
    /// The message names the key and what was expected; fix that line.
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// The card beside a model is unreadable, or describes another file: see its message.
    #[error(transparent)]
    Card(#[from] crate::model::card::CardError),
    /// A value is well-typed but wrong: a missing model or image folder, a checksum that
    /// differs, an impossible size. Fix the value, or the file it points to.
    #[error("{file}:{line}: {key}: {found}, expected {expected}")]
    Value {
        file: PathBuf,
        line: usize,
        key: String,
        found: String,
        expected: String,
    },
}

/// Where the service keeps its state (the MQTT spool, fleet updates): systemd's
/// `StateDirectory=` (`$STATE_DIRECTORY`), else `/var/lib/ocelli`.
pub fn state_directory() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/ocelli".into())
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub board: Board,
    pub source: SourceConfig,
    /// Detectors run on every frame, in order.
    #[serde(default, rename = "detector")]
    pub detectors: Vec<DetectorConfig>,
    /// Second-stage classifiers, run on crops of the detections.
    #[serde(default, rename = "classifier")]
    pub classifiers: Vec<crate::detect::classify::ClassifierConfig>,
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    #[serde(default)]
    pub imaging: ImagingConfig,
    #[serde(default)]
    pub output: OutputConfig,
    /// Object tracking and zones, after the detectors.
    #[serde(default)]
    pub track: Option<crate::track::TrackConfig>,
    /// Signed model and detector updates from the fleet (docs/fleet.md).
    #[serde(default)]
    pub update: Option<crate::update::UpdateConfig>,
    /// The folder relative paths are resolved against: the config file's own.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// What the device is: used by presets and packaging, and to pick tract's kernels.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Board {
    pub name: String,
    /// Rust target triple the preset is built for; packaging/build-deb.sh refuses a preset
    /// whose triple is not the package's architecture's.
    pub target: Option<String>,
    /// tract CPU kind for aarch64 kernel selection (`TRACT_CPU_AARCH64_KIND`), e.g. `cortex_a72`.
    pub tract_cpu: Option<String>,
    /// Threads for tract's matrix products (its `multithread-mm` executor); 1 runs inference on
    /// the frame loop's thread alone. A reload applies a change.
    pub threads: usize,
    /// Memory the board gives the service, in MB: `check-config` fails when the models and
    /// frame buffers would need more, and the package's systemd unit gets it as `MemoryMax=`.
    pub memory_mb: Option<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            name: "host".into(),
            target: None,
            tract_cpu: None,
            threads: 1,
            memory_mb: None,
        }
    }
}

/// Where frames come from.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A V4L2 camera.
    V4l2 {
        #[serde(default = "default_device")]
        device: PathBuf,
        /// FourCC to ask for (YUYV, MJPG, NV12, RGB3, GREY); unset picks the first supported.
        #[serde(default)]
        format: Option<String>,
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        #[serde(default = "default_fps")]
        fps: u32,
        /// mmap buffers queued in the driver.
        #[serde(default = "default_buffers")]
        buffers: u32,
    },
    /// A PNG/JPEG file, or a folder of them (sorted by name).
    Images {
        path: PathBuf,
        /// Start again after the last image.
        #[serde(default, rename = "loop")]
        looping: bool,
        /// Images declaring more pixels are refused from their header, before decoding.
        #[serde(default = "default_max_pixels")]
        max_pixels: u64,
    },
    /// A moving test pattern, generated in a camera pixel format.
    Synthetic {
        #[serde(default = "default_width")]
        width: u32,
        #[serde(default = "default_height")]
        height: u32,
        /// Stop after this many frames; unset runs forever.
        #[serde(default)]
        frames: Option<u64>,
        /// Scripted camera losses, to exercise recovery.
        #[serde(default)]
        faults: Vec<Fault>,
        /// Frames per second, like a camera; unset delivers frames as fast as they are taken.
        #[serde(default)]
        fps: Option<f64>,
    },
}

/// A scripted fault of the synthetic camera after `after` frames: a loss (reopening fails
/// until `seconds` have passed) or one bad frame.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub after: u64,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub kind: FaultKind,
}

/// What a scripted fault does.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The camera goes away.
    #[default]
    Lost,
    /// One frame arrives cut short.
    Truncated,
    /// One frame's buffer does not match the negotiated size.
    WrongSize,
}

/// How a lost camera is detected and reopened.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// Waits before each reopening attempt, in seconds; the last one repeats.
    pub delays_s: Vec<f64>,
    /// A camera that delivers no frame for this long counts as lost.
    pub frame_timeout_s: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            delays_s: vec![1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 30.0],
            frame_timeout_s: 2.0,
        }
    }
}

impl ReconnectConfig {
    /// The wait before attempt `n` (0-based).
    pub fn delay(&self, attempt: usize) -> std::time::Duration {
        let s = self
            .delays_s
            .get(attempt)
            .or(self.delays_s.last())
            .copied()
            .unwrap_or(1.0);
        std::time::Duration::from_secs_f64(s.max(0.0))
    }
}

fn default_device() -> PathBuf {
    "/dev/video0".into()
}
fn default_width() -> u32 {
    640
}
fn default_height() -> u32 {
    480
}
fn default_fps() -> u32 {
    30
}
fn default_buffers() -> u32 {
    4
}
fn default_max_pixels() -> u64 {
    crate::limits::DEFAULT_MAX_PIXELS
}

/// One detector: a model file, how to feed it and how to read its outputs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// A name for logs and overlays; defaults to the model's file stem.
    #[serde(default)]
    pub name: Option<String>,
    pub model: PathBuf,
    /// Expected sha256 of the model file, hex; the model is refused when it differs.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The output layout; unset means recognised from the output shapes.
    #[serde(default)]
    pub family: Option<Family>,
    /// `coco`, `face`, `text`, or a path to a text file with one label per line.
    #[serde(default = "default_labels")]
    pub labels: String,
    /// Model input width and height, for models whose input shape is not fixed.
    #[serde(default)]
    pub input_size: Option<[usize; 2]>,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    #[serde(default)]
    pub decode: DecodeConfig,
}

fn default_labels() -> String {
    "coco".into()
}

/// How a frame becomes the model's input tensor.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    pub resize: ResizeMode,
    /// Resampling: `linear` (OpenCV INTER_LINEAR) or `area` (INTER_AREA).
    pub interpolation: Resample,
    /// How the letterboxed size rounds: `floor` (YOLOX, NanoDet, YuNet samples) or
    /// `nearest` (Ultralytics).
    pub size_rounding: SizeRounding,
    /// Grey level of the letterbox padding.
    pub pad_value: u8,
    pub pad: PadPlacement,
    /// Channel order the model expects.
    pub channels: ChannelOrder,
    /// Per-channel mean subtracted from 0..255 values, in the model's channel order.
    pub mean: [f32; 3],
    /// Per-channel divisor applied after the mean.
    pub std: [f32; 3],
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            resize: ResizeMode::Letterbox,
            interpolation: Resample::Linear,
            size_rounding: SizeRounding::Floor,
            pad_value: 114,
            pad: PadPlacement::TopLeft,
            channels: ChannelOrder::Rgb,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }
}

impl PreprocessConfig {
    /// The imaging plan that fills a `width × height` model input as this config says.
    pub fn plan(&self, width: usize, height: usize) -> geometry::Preprocess {
        let placement = match self.pad {
            PadPlacement::TopLeft => geometry::Placement::TopLeft,
            PadPlacement::Center => geometry::Placement::Centre,
        };
        geometry::Preprocess {
            width,
            height,
            fit: match self.resize {
                ResizeMode::Letterbox => geometry::Fit::Letterbox {
                    placement,
                    pad: self.pad_value,
                },
                ResizeMode::Stretch => geometry::Fit::Stretch,
                ResizeMode::Height => geometry::Fit::Height {
                    pad: self.pad_value,
                },
            },
            rounding: match self.size_rounding {
                SizeRounding::Floor => geometry::Rounding::Floor,
                SizeRounding::Nearest => geometry::Rounding::Nearest,
            },
            interpolation: match self.interpolation {
                Resample::Linear => geometry::Interpolation::Linear,
                Resample::Area => geometry::Interpolation::Area,
            },
            normalize: geometry::Normalize {
                swap_rb: self.channels == ChannelOrder::Bgr,
                mean: self.mean,
                std: self.std,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Keep the aspect ratio and pad.
    Letterbox,
    /// Scale each axis independently to fill the input.
    Stretch,
    /// Scale to the input height keeping the aspect ratio, squash to the input width when
    /// wider, pad the right: PaddleOCR's text-line classifiers and recognisers.
    Height,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SizeRounding {
    Floor,
    Nearest,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    Linear,
    Area,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PadPlacement {
    /// Image at the top-left, padding right and bottom (YOLOX).
    TopLeft,
    /// Image centred, padding split on both sides (Ultralytics).
    Center,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// Classic imaging stages run on each frame before the detectors.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagingConfig {
    /// Warp a quadrilateral region of the frame to an upright rectangle first.
    #[serde(default)]
    pub rectify: Option<RectifyConfig>,
    /// Run the detectors only when enough of the frame moves.
    #[serde(default)]
    pub motion: Option<MotionConfig>,
}

/// Perspective rectification of a region of interest (a document, a shelf, a road sign).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RectifyConfig {
    /// Corners of the region in source pixels: top-left, top-right, bottom-right, bottom-left.
    pub quad: [[f32; 2]; 4],
    /// Width and height of the rectified image; detections are reported in its pixels.
    pub size: [usize; 2],
}

/// Where results go.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The JSON-lines Unix socket.
    #[serde(default)]
    pub socket: Option<SocketConfig>,
    /// A file the same JSON lines are appended to, for logs and tests.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// Annotated copies of the frames, as PNG files named after the frame.
    #[serde(default)]
    pub annotated_dir: Option<PathBuf>,
    /// A table of detections on stdout, for people.
    #[serde(default)]
    pub print: bool,
    /// The same lines to an MQTT broker, through an on-disk spool.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Metrics, health and the latest annotated frame over HTTP; off unless configured.
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// Annotated frames saved when chosen events happen.
    #[serde(default)]
    pub snapshots: Option<crate::snapshot::SnapshotConfig>,
    /// Annotated frames shown on a Linux framebuffer.
    #[serde(default)]
    pub framebuffer: Option<crate::framebuffer::FramebufferConfig>,
}

impl Config {
    /// Reads, parses and validates `file`: models exist and match their checksums, the image
    /// source exists, sizes are sane.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Self::parse(file, &read(file)?)
    }

    /// Parses and validates config `text` read from `file` (used to name the file in errors
    /// and as the base for relative paths).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let config = Self::parse_settings(file, text)?;
        config.validate_files(file, text)?;
        Ok(config)
    }

    /// Reads and parses `file` as [`Config::load`] does, without reading the files it names
    /// (models, labels, image folders): for tools that apply its detector settings to other
    /// model files, away from the device.
    pub fn load_settings(file: &Path) -> Result<Config, ConfigError> {
        Self::parse_settings(file, &read(file)?)
    }

    /// [`Config::parse`] without reading the files the config names.
    pub fn parse_settings(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.into(),
            line: e.span().map_or(0, |s| line_of_offset(text, s.start)),
            message: with_key(text, e.span(), &e.message().replace('\n', " ")),
        })?;
        config.base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        config.validate(file, text)?;
        Ok(config)
    }

    /// This config running `detectors` and `classifiers` instead of its own: a fleet bundle's,
    /// from its config fragment `file` (text `text`, which errors point into), checked as
    /// [`Config::parse`] checks a config.
    pub fn with_models(
        &self,
        file: &Path,
        text: &str,
        detectors: Vec<DetectorConfig>,
        classifiers: Vec<crate::detect::classify::ClassifierConfig>,
    ) -> Result<Config, ConfigError> {
        let config = Config {
            detectors,
            classifiers,
            ..self.clone()
        };
        config.validate(file, text)?;
        config.validate_files(file, text)?;
        Ok(config)
    }

    /// A path from the config, resolved against the config file's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }

    /// Checks the values that need no file: sizes, delays, geometry, detector settings.
    fn validate(&self, file: &Path, text: &str) -> Result<(), ConfigError> {
        let err = value_error(file, text);
        match &self.source {
            SourceConfig::Images { max_pixels, .. }
                if !(1..=crate::limits::DEFAULT_MAX_PIXELS).contains(max_pixels) =>
            {
                return Err(err(
                    &[Key::Name("source"), Key::Name("max_pixels")],
                    max_pixels.to_string(),
                    "1 to 67108864 (8192x8192)",
                ));
            }
            SourceConfig::V4l2 { width, height, .. }
            | SourceConfig::Synthetic { width, height, .. }
                if *width == 0 || *height == 0 || *width > 8192 || *height > 8192 =>
            {
                return Err(err(
                    &[Key::Name("source"), Key::Name("width")],
                    format!("{width}x{height}"),
                    "a size between 1x1 and 8192x8192",
                ));
            }
            SourceConfig::Synthetic { faults, .. } => {
                if let Some(i) = faults
                    .iter()
                    .position(|f| !(0.0..=3600.0).contains(&f.seconds))
                {
                    return Err(err(
                        &[
                            Key::Name("source"),
                            Key::Name("faults"),
                            Key::Index(i),
                            Key::Name("seconds"),
                        ],
                        faults[i].seconds.to_string(),
                        "0 to 3600 s",
                    ));
                }
            }
            _ => {}
        }
        let r = &self.reconnect;
        if r.delays_s.is_empty() || r.delays_s.iter().any(|d| !(0.0..=3600.0).contains(d)) {
            let key = [Key::Name("reconnect"), Key::Name("delays_s")];
            return Err(err(
                &key,
                format!("{:?}", r.delays_s),
                "one or more waits of 0 to 3600 s",
            ));
        }
        if !(0.05..=3600.0).contains(&r.frame_timeout_s) {
            let key = [Key::Name("reconnect"), Key::Name("frame_timeout_s")];
            return Err(err(&key, r.frame_timeout_s.to_string(), "0.05 to 3600 s"));
        }
        if let Some(r) = &self.imaging.rectify {
            let key = [
                Key::Name("imaging"),
                Key::Name("rectify"),
                Key::Name("quad"),
            ];
            if geometry::get_perspective_transform(&r.quad, &rect_corners(r.size)).is_err() {
                return Err(err(
                    &key,
                    format!("{:?}", r.quad),
                    "four corners of a quadrilateral, no three in a line",
                ));
            }
            if r.size[0] == 0 || r.size[1] == 0 {
                let key = [
                    Key::Name("imaging"),
                    Key::Name("rectify"),
                    Key::Name("size"),
                ];
                return Err(err(
                    &key,
                    format!("{:?}", r.size),
                    "a non-zero width and height",
                ));
            }
        }
        if let Some(m) = &self.imaging.motion
            && let Err(e) = crate::imgproc::motion::MotionGate::new(m.clone())
        {
            return Err(err(
                &[Key::Name("imaging"), Key::Name("motion")],
                e.to_string(),
                "valid motion settings",
            ));
        }
        if let Some(Err(e)) = self.track.as_ref().map(|t| t.validate()) {
            let crate::track::TrackError::Setting {
                key,
                found,
                expected,
            } = e;
            return Err(err(
                &[Key::Name("track")],
                format!("{key} = {found}"),
                expected,
            ));
        }
        if let Some((name, found, expected)) = self.update.as_ref().and_then(|u| u.check()) {
            return Err(err(
                &[Key::Name("update"), Key::Name(name)],
                found,
                expected,
            ));
        }
        for (i, d) in self.detectors.iter().enumerate() {
            let key = |name| [Key::Name("detector"), Key::Index(i), Key::Name(name)];
            if d.preprocess.std.contains(&0.0) {
                return Err(err(
                    &key("preprocess"),
                    "a zero in std".into(),
                    "non-zero std values",
                ));
            }
        }
        Ok(())
    }

    /// Checks the files the config names: the image source, models and their checksums,
    /// labels files.
    fn validate_files(&self, file: &Path, text: &str) -> Result<(), ConfigError> {
        let err = value_error(file, text);
        if let SourceConfig::Images { path, .. } = &self.source
            && !self.resolve(path).exists()
        {
            return Err(err(
                &[Key::Name("source"), Key::Name("path")],
                format!("{} does not exist", self.resolve(path).display()),
                "an image file or a folder of PNG/JPEG files",
            ));
        }
        for (i, d) in self.detectors.iter().enumerate() {
            let key = |name| [Key::Name("detector"), Key::Index(i), Key::Name(name)];
            let model = self.resolve(&d.model);
            let bytes = crate::limits::read_bounded(&model, crate::limits::MAX_MODEL_BYTES)
                .map_err(|e| {
                    err(
                        &key("model"),
                        format!("{}: {e}", model.display()),
                        "a readable ONNX file",
                    )
                })?;
            // Hashed once, and only when a checksum or a card asks for it.
            let sha256 = std::cell::OnceCell::new();
            let found = || sha256.get_or_init(|| crate::model::card::sha256_hex(&bytes));
            if let Some(expected) = &d.sha256 {
                let found = found();
                if !found.eq_ignore_ascii_case(expected.trim()) {
                    return Err(err(
                        &key("sha256"),
                        format!("{} has sha256 {found}", model.display()),
                        expected,
                    ));
                }
            }
            if let Some(card) = crate::model::card::Card::beside(&model)? {
                card.check(&model, found())?;
            }
            if !matches!(d.labels.as_str(), "coco" | "face" | "text")
                && !self.resolve(Path::new(&d.labels)).is_file()
            {
                return Err(err(
                    &key("labels"),
                    format!(
                        "{} does not exist",
                        self.resolve(Path::new(&d.labels)).display()
                    ),
                    "\"coco\", \"face\", \"text\" or a labels file with one label per line",
                ));
            }
        }
        for (i, k) in self
            .update
            .iter()
            .flat_map(|u| u.trusted_keys.iter())
            .enumerate()
        {
            if let Err(e) = crate::update::bundle::read_public_key(&self.resolve(k)) {
                let key = [
                    Key::Name("update"),
                    Key::Name("trusted_keys"),
                    Key::Index(i),
                ];
                return Err(err(
                    &key,
                    e.to_string(),
                    "a public key file from ocelli-compress keygen",
                ));
            }
        }
        Ok(())
    }
}

/// `message` led by the key of the `key = value` line at `span`, unless it names it already
/// (serde's value errors name the expected values, not the key).
fn with_key(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let line = span.and_then(|s| text.get(..s.start)).map_or("", |before| {
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        text[start..].lines().next().unwrap_or("")
    });
    match line.split_once('=').map(|(k, _)| k.trim()) {
        Some(key)
            if !key.is_empty()
                && !key.starts_with('#')
                && !message.contains(&format!("`{key}`")) =>
        {
            format!("{key}: {message}")
        }
        _ => message.into(),
    }
}

/// Reads `file` as UTF-8 text, refusing one over [`crate::limits::MAX_CONFIG_BYTES`].
fn read(file: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read {
        file: file.into(),
        source,
    };
    let bytes =
        crate::limits::read_bounded(file, crate::limits::MAX_CONFIG_BYTES).map_err(read_err)?;
    String::from_utf8(bytes)
        .map_err(|e| read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Builds [`ConfigError::Value`]s for `file`, locating each key's line in `text`.
fn value_error<'a>(
    file: &'a Path,
    text: &'a str,
) -> impl Fn(&[Key], String, &str) -> ConfigError + 'a {
    move |key, found, expected| ConfigError::Value {
        file: file.into(),
        line: line_of_key(text, key),
        key: dotted(key),
        found,
        expected: expected.into(),
    }
}

/// The corners of a `size` rectangle, in the order of [`RectifyConfig::quad`].
pub fn rect_corners(size: [usize; 2]) -> [[f32; 2]; 4] {
    let (w, h) = (size[0] as f32, size[1] as f32);
    [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]]
}

/// A step in a path of keys, for locating a value in the source text.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    Name(&'a str),
    Index(usize),
}

fn dotted(key: &[Key]) -> String {
    let mut s = String::new();
    for k in key {
        match k {
            Key::Name(n) if s.is_empty() => s.push_str(n),
            Key::Name(n) => {
                s.push('.');
                s.push_str(n)
            }
            Key::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The 1-based line of the value at `key`, or of its closest existing parent.
pub fn line_of_key(text: &str, key: &[Key]) -> usize {
    let Ok(root) = toml::de::DeTable::parse(text) else {
        return 0;
    };
    let mut span = root.span();
    let mut value: Option<&toml::de::DeValue> = None;
    let mut table = Some(root.get_ref());
    for k in key {
        let next = match (k, table, value) {
            (Key::Name(n), Some(t), _) => t.get(*n),
            (Key::Index(i), _, Some(toml::de::DeValue::Array(a))) => a.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        span = next.span();
        value = Some(next.get_ref());
        table = next.get_ref().as_table();
    }
    line_of_offset(text, span.start)
}

pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

impl fmt::Display for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceConfig::V4l2 {
                device,
                format,
                width,
                height,
                fps,
                ..
            } => write!(
                f,
                "v4l2 {} {}x{}@{fps} {}",
                device.display(),
                width,
                height,
                format.as_deref().unwrap_or("auto")
            ),
            SourceConfig::Images { path, looping, .. } => {
                write!(
                    f,
                    "images {}{}",
                    path.display(),
                    if *looping { " (loop)" } else { "" }
                )
            }
            SourceConfig::Synthetic { width, height, .. } => {
                write!(f, "synthetic {width}x{height}")
            }
        }
    }
}
