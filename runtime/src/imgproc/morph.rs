//! Morphology on single-channel u8 images, pixel-exact with OpenCV's `erode`, `dilate`,
//! `morphologyEx` and `getStructuringElement`.
//!
//! OpenCV's semantics, reproduced here:
//! - `dst(x, y) = min|max { src(x + j - ax, y + i - ay) : kernel(i, j) != 0 }`. Dilation does not
//!   reflect the kernel, so erosion and dilation by one element are dual: `erode(x) = !dilate(!x)`.
//! - `iterations == 0` or a 1×1 element copies the source. A rectangle (every element set) run
//!   `n > 1` times becomes one pass of the `n`-fold grown rectangle with the anchor scaled by `n`
//!   (which differs from `n` passes near a constant or replicated border); other elements run `n`
//!   passes.
//! - [`Border::Neutral`], OpenCV's default (`BORDER_CONSTANT` with
//!   `morphologyDefaultBorderValue()`), never wins the min/max: outside pixels are ignored.
//! - open = dilate ∘ erode, close = erode ∘ dilate, gradient = dilate − erode, top-hat =
//!   src − open, black-hat = close − src (saturating), hit-or-miss =
//!   erode(src, kernel == 1) & erode(!src, kernel == −1).
//!
//! The engine works on rows of "lanes": u8 pixels here, 64-pixel words in
//! [`super::bitmask`]. A rectangle is separated: a vertical min/max over whole rows, then a
//! horizontal one by doubling (log2 of the width in shifted min/max). Other elements are cut
//! into horizontal runs, each run computed once per source row and combined vertically. Every
//! primitive is a shifted min/max of two rows, written with `std::arch` (SSE2, AVX2, AVX-512 on
//! x86-64, NEON on aarch64) because the release profile's `opt-level = "s"` disables
//! auto-vectorisation. [`reference`] holds the plain per-pixel definition the fast paths are
//! tested against.

use std::fmt::Debug;
use std::ops::Range;

use thiserror::Error;

use super::Image;

/// Errors of the morphology functions.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum MorphError {
    /// The image has several channels. Morphology works on grey or mask images: split the
    /// channels (or convert to grey) first.
    #[error("morphology needs a single-channel image, got {channels} channels")]
    NotSingleChannel { channels: usize },
    /// The structuring element has no row or no column: give it at least 1×1.
    #[error("structuring element is {width}x{height}: both sides must be at least 1")]
    EmptyKernel { width: usize, height: usize },
    /// A custom element got the wrong number of values: pass `width * height`, row-major.
    #[error("a {width}x{height} structuring element needs {} values, got {len}", width * height)]
    KernelValues {
        width: usize,
        height: usize,
        len: usize,
    },
    /// The anchor is not inside the element: use coordinates within it, or `None` for the centre.
    #[error("anchor ({x}, {y}) is outside the {width}x{height} structuring element")]
    AnchorOutside {
        x: usize,
        y: usize,
        width: usize,
        height: usize,
    },
    /// No element is set, so erosion and dilation have nothing to take the min/max of (OpenCV's
    /// behaviour is undefined there): set at least one element.
    #[error("the structuring element has no set element")]
    NoActiveElement,
    /// The requested instruction set is not supported by this CPU: use [`Simd::detect`] or one
    /// of [`Simd::available`].
    #[error("{0:?} is not available on this CPU")]
    SimdUnavailable(Simd),
}

/// A morphological operation (OpenCV's `MorphTypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MorphOp {
    Erode,
    Dilate,
    Open,
    Close,
    Gradient,
    TopHat,
    BlackHat,
    /// Hit-or-miss on binary images: kernel 1 = must be set, −1 = must be clear, 0 = ignored.
    HitMiss,
}

impl MorphOp {
    pub const ALL: [MorphOp; 8] = [
        MorphOp::Erode,
        MorphOp::Dilate,
        MorphOp::Open,
        MorphOp::Close,
        MorphOp::Gradient,
        MorphOp::TopHat,
        MorphOp::BlackHat,
        MorphOp::HitMiss,
    ];
}

/// The shapes of [`StructuringElement::new`] (OpenCV's `MorphShapes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Rect,
    Cross,
    Ellipse,
}

/// How pixels outside the image are seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Border {
    /// OpenCV's default: outside pixels never win the min/max (255 for erosion, 0 for dilation).
    #[default]
    Neutral,
    /// The nearest edge pixel (`BORDER_REPLICATE`).
    Replicate,
    /// A fixed value (`BORDER_CONSTANT` with an explicit `borderValue`).
    Constant(u8),
}

/// A structuring element: `width × height` values, row-major. Nonzero values are part of the
/// element; hit-or-miss reads 1 as "must be set" and −1 as "must be clear".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StructuringElement {
    width: usize,
    height: usize,
    values: Vec<i8>,
}

impl StructuringElement {
    /// OpenCV's `getStructuringElement(shape, (width, height), anchor)`, ellipse formula and
    /// rounding included. The anchor only places the bars of a cross.
    pub fn new(
        shape: Shape,
        width: usize,
        height: usize,
        anchor: Option<(usize, usize)>,
    ) -> Result<Self, MorphError> {
        check_size(width, height)?;
        let (ax, ay) = resolve_anchor(anchor, width, height)?;
        let shape = if width == 1 && height == 1 {
            Shape::Rect
        } else {
            shape
        };
        let (r, c) = ((height / 2) as i64, (width / 2) as i64);
        let inv_r2 = if r > 0 {
            1.0 / (r as f64 * r as f64)
        } else {
            0.0
        };
        let mut values = vec![0i8; width * height];
        for (i, row) in values.chunks_exact_mut(width).enumerate() {
            let (j1, j2) = match shape {
                Shape::Rect => (0, width),
                Shape::Cross if i == ay => (0, width),
                Shape::Cross => (ax, ax + 1),
                Shape::Ellipse => {
                    let dy = i as i64 - r;
                    if dy.abs() > r {
                        (0, 0)
                    } else {
                        // OpenCV: saturate_cast<int>(c * sqrt((r*r - dy*dy) * inv_r2)), which
                        // rounds half to even.
                        let dx = (c as f64 * ((r * r - dy * dy) as f64 * inv_r2).sqrt())
                            .round_ties_even() as i64;
                        ((c - dx).max(0) as usize, ((c + dx + 1) as usize).min(width))
                    }
                }
            };
            row[j1..j2].fill(1);
        }
        Ok(Self {
            width,
            height,
            values,
        })
    }

    /// A full `width × height` rectangle.
    pub fn rect(width: usize, height: usize) -> Result<Self, MorphError> {
        Self::new(Shape::Rect, width, height, None)
    }

    /// A custom element from `width * height` row-major values.
    pub fn custom(width: usize, height: usize, values: Vec<i8>) -> Result<Self, MorphError> {
        check_size(width, height)?;
        if values.len() != width * height {
            return Err(MorphError::KernelValues {
                width,
                height,
                len: values.len(),
            });
        }
        Ok(Self {
            width,
            height,
            values,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major values.
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    fn mask(&self, keep: impl Fn(i8) -> bool) -> Vec<bool> {
        self.values.iter().map(|&v| keep(v)).collect()
    }
}

fn check_size(width: usize, height: usize) -> Result<(), MorphError> {
    if width == 0 || height == 0 {
        return Err(MorphError::EmptyKernel { width, height });
    }
    Ok(())
}

/// OpenCV's `normalizeAnchor`: `None` is the centre `(width / 2, height / 2)`.
fn resolve_anchor(
    anchor: Option<(usize, usize)>,
    width: usize,
    height: usize,
) -> Result<(usize, usize), MorphError> {
    let (x, y) = anchor.unwrap_or((width / 2, height / 2));
    if x >= width || y >= height {
        return Err(MorphError::AnchorOutside {
            x,
            y,
            width,
            height,
        });
    }
    Ok((x, y))
}

/// The instruction set of the row kernels. [`Simd::detect`] picks the fastest one the CPU has;
/// the others exist so that tests can run every implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Simd {
    /// Plain Rust loops.
    Scalar,
    /// x86-64 baseline, 16 bytes at a time.
    Sse2,
    /// ARM NEON (aarch64 baseline), 16 bytes at a time.
    Neon,
    /// x86-64 AVX2, 32 bytes at a time.
    Avx2,
    /// x86-64 AVX-512 (F + BW), 64 bytes at a time.
    Avx512,
}

impl Simd {
    /// Every variant, slowest first.
    pub const ALL: [Simd; 5] = [
        Simd::Scalar,
        Simd::Sse2,
        Simd::Neon,
        Simd::Avx2,
        Simd::Avx512,
    ];

    pub fn is_available(self) -> bool {
        match self {
            Simd::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Sse2 => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "aarch64")]
            Simd::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            _ => false,
        }
    }

    /// The instruction sets this CPU runs, slowest first.
    pub fn available() -> Vec<Simd> {
        Simd::ALL.into_iter().filter(|s| s.is_available()).collect()
    }

    /// The fastest available instruction set.
    pub fn detect() -> Simd {
        Simd::ALL
            .into_iter()
            .rev()
            .find(|s| s.is_available())
            .unwrap_or(Simd::Scalar)
    }
}

/// A configured morphological operation. Build it once and [`apply`](Self::apply) it per frame:
/// the element is analysed once and the working buffers are kept, so a call allocates nothing
/// once the image size is stable.
#[derive(Clone, Debug)]
pub struct Morphology {
    pub(crate) config: Config,
    u8s: Scratch<u8>,
    pub(crate) words: Scratch<u64>,
}

impl Morphology {
    /// Validates and analyses `op` with `kernel`, `anchor` (x, y; `None` = centre),
    /// `iterations` and `border`, exactly as OpenCV's `morphologyEx` would run them.
    pub fn new(
        op: MorphOp,
        kernel: &StructuringElement,
        anchor: Option<(usize, usize)>,
        iterations: usize,
        border: Border,
    ) -> Result<Self, MorphError> {
        let (w, h) = (kernel.width, kernel.height);
        let anchor = resolve_anchor(anchor, w, h)?;
        let plan = if op == MorphOp::HitMiss {
            let part = |v: i8| {
                let mask = kernel.mask(|k| k == v);
                mask.contains(&true)
                    .then(|| Pass::new(&mask, w, h, anchor, iterations))
                    .transpose()
            };
            if kernel.values.iter().all(|&v| v == 0) {
                Plan::Copy
            } else {
                Plan::HitMiss {
                    hit: part(1)?,
                    miss: part(-1)?,
                }
            }
        } else {
            Plan::Single(Pass::new(
                &kernel.mask(|k| k != 0),
                w,
                h,
                anchor,
                iterations,
            )?)
        };
        let config = Config {
            op,
            plan,
            border,
            simd: Simd::detect(),
        };
        Ok(Self {
            config,
            u8s: Scratch::default(),
            words: Scratch::default(),
        })
    }

    /// Runs the row kernels with `simd` instead of the detected best.
    pub fn with_simd(mut self, simd: Simd) -> Result<Self, MorphError> {
        if !simd.is_available() {
            return Err(MorphError::SimdUnavailable(simd));
        }
        self.config.simd = simd;
        Ok(self)
    }

    pub fn simd(&self) -> Simd {
        self.config.simd
    }

    /// `dst = op(src)`; `dst` is resized to `src`'s size, reusing its allocation.
    pub fn apply(&mut self, src: &Image, dst: &mut Image) -> Result<(), MorphError> {
        if src.channels != 1 {
            return Err(MorphError::NotSingleChannel {
                channels: src.channels,
            });
        }
        dst.reshape(src.width, src.height, 1);
        let g = Geometry {
            width: src.width,
            height: src.height,
            stride: src.width,
        };
        run::<U8>(&self.config, &mut self.u8s, &src.data, &mut dst.data, g);
        Ok(())
    }
}

/// OpenCV's `morphologyEx(src, dst, op, kernel, anchor, iterations, border)`.
pub fn morphology_ex(
    src: &Image,
    dst: &mut Image,
    op: MorphOp,
    kernel: &StructuringElement,
    anchor: Option<(usize, usize)>,
    iterations: usize,
    border: Border,
) -> Result<(), MorphError> {
    Morphology::new(op, kernel, anchor, iterations, border)?.apply(src, dst)
}

/// OpenCV's `erode`.
pub fn erode(
    src: &Image,
    dst: &mut Image,
    kernel: &StructuringElement,
    anchor: Option<(usize, usize)>,
    iterations: usize,
    border: Border,
) -> Result<(), MorphError> {
    morphology_ex(src, dst, MorphOp::Erode, kernel, anchor, iterations, border)
}

/// OpenCV's `dilate`.
pub fn dilate(
    src: &Image,
    dst: &mut Image,
    kernel: &StructuringElement,
    anchor: Option<(usize, usize)>,
    iterations: usize,
    border: Border,
) -> Result<(), MorphError> {
    morphology_ex(
        src,
        dst,
        MorphOp::Dilate,
        kernel,
        anchor,
        iterations,
        border,
    )
}

// ---------------------------------------------------------------------------------------------
// Plans: what OpenCV's `morphOp` makes of (kernel, anchor, iterations).

#[derive(Clone, Debug)]
pub(crate) struct Config {
    op: MorphOp,
    plan: Plan,
    border: Border,
    simd: Simd,
}

#[derive(Clone, Debug)]
enum Plan {
    Single(Pass),
    /// `None` for a part without elements (OpenCV then uses an all-255 image).
    HitMiss {
        hit: Option<Pass>,
        miss: Option<Pass>,
    },
    /// Hit-or-miss with an all-zero kernel.
    Copy,
}

/// One erosion or dilation, repeated `repeat` times.
#[derive(Clone, Debug)]
struct Pass {
    kind: PassKind,
    repeat: usize,
}

#[derive(Clone, Debug)]
enum PassKind {
    Copy,
    Rect(RectPlan),
    Runs(RunsPlan),
}

#[derive(Clone, Copy, Debug)]
struct RectPlan {
    kw: usize,
    kh: usize,
    ax: usize,
    ay: usize,
}

/// A general element as horizontal runs: output `(x, y)` combines, for every term, the
/// source row `y + dy` either at `x + d` (a one-pixel run) or through a window.
#[derive(Clone, Debug)]
struct RunsPlan {
    kh: usize,
    ay: usize,
    terms: Vec<Term>,
    windows: Vec<Window>,
    /// Farthest reach of any window to the left of the anchor.
    max_left: usize,
    /// Rows of doubling levels a window needs (0 when every window is short).
    levels: usize,
}

#[derive(Clone, Copy, Debug)]
struct Term {
    dy: isize,
    source: TermSource,
}

#[derive(Clone, Copy, Debug)]
enum TermSource {
    Pixel(isize),
    Window(usize),
}

/// Horizontal window `[x + d0, x + d0 + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    d0: isize,
    len: usize,
}

/// Windows up to this length are computed by direct shifts; longer ones by doubling.
const DIRECT_MAX: usize = 5;

impl Pass {
    fn new(
        mask: &[bool],
        kw: usize,
        kh: usize,
        (ax, ay): (usize, usize),
        iterations: usize,
    ) -> Result<Pass, MorphError> {
        if iterations == 0 || kw * kh == 1 {
            return Ok(Pass {
                kind: PassKind::Copy,
                repeat: 1,
            });
        }
        if mask.iter().all(|&set| set) {
            let n = iterations;
            let rect = RectPlan {
                kw: kw + (n - 1) * (kw - 1),
                kh: kh + (n - 1) * (kh - 1),
                ax: ax * n,
                ay: ay * n,
            };
            return Ok(Pass {
                kind: PassKind::Rect(rect),
                repeat: 1,
            });
        }
        if !mask.contains(&true) {
            return Err(MorphError::NoActiveElement);
        }
        let mut terms = Vec::new();
        let mut windows = Vec::new();
        for (i, row) in mask.chunks_exact(kw).enumerate() {
            let mut j = 0;
            while j < kw {
                if !row[j] {
                    j += 1;
                    continue;
                }
                let j1 = j;
                while j < kw && row[j] {
                    j += 1;
                }
                let d0 = j1 as isize - ax as isize;
                let source = if j - j1 == 1 {
                    TermSource::Pixel(d0)
                } else {
                    let win = Window { d0, len: j - j1 };
                    let k = windows.iter().position(|&w| w == win).unwrap_or_else(|| {
                        windows.push(win);
                        windows.len() - 1
                    });
                    TermSource::Window(k)
                };
                terms.push(Term {
                    dy: i as isize - ay as isize,
                    source,
                });
            }
        }
        let max_left = windows
            .iter()
            .map(|w| (-w.d0).max(0) as usize)
            .max()
            .unwrap_or(0);
        let levels = windows
            .iter()
            .filter(|w| w.len > DIRECT_MAX)
            .map(|w| w.len.ilog2() as usize + 1)
            .max()
            .unwrap_or(0);
        let plan = RunsPlan {
            kh,
            ay,
            terms,
            windows,
            max_left,
            levels,
        };
        Ok(Pass {
            kind: PassKind::Runs(plan),
            repeat: iterations,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The engine, generic over the lane type.

/// Erosion takes the minimum, dilation the maximum (AND / OR on bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extremum {
    Min,
    Max,
}

/// Image layout in lane units.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub width: usize,
    pub height: usize,
    /// Units per row.
    pub stride: usize,
}

/// Row `row` read at `x + shift`, where positions outside `[0, width)` read `fill`.
#[derive(Clone, Copy)]
pub(crate) struct Shifted<'a, U> {
    pub row: &'a [U],
    pub width: usize,
    pub shift: isize,
    pub fill: U,
}

impl<'a, U: Copy> Shifted<'a, U> {
    fn new(row: &'a [U], width: usize, shift: isize, fill: U) -> Self {
        Self {
            row,
            width,
            shift,
            fill,
        }
    }

    /// Reads `fill` everywhere.
    fn fill(fill: U) -> Self {
        Self {
            row: &[],
            width: 0,
            shift: 0,
            fill,
        }
    }

    /// The output range `[lo, hi)` within `[0, w)` that reads the row (the rest reads `fill`).
    pub(crate) fn inside(&self, w: usize) -> Range<usize> {
        let lo = (-self.shift).clamp(0, w as isize);
        let hi = (self.width as isize - self.shift).clamp(lo, w as isize);
        lo as usize..hi as usize
    }

    /// [`Self::inside`] and the part of the row it reads (for one unit per pixel).
    fn split(&self, w: usize) -> (Range<usize>, &'a [U]) {
        let inside = self.inside(w);
        if inside.is_empty() {
            return (inside, &[]);
        }
        let from = (inside.start as isize + self.shift) as usize;
        (inside.clone(), &self.row[from..from + inside.len()])
    }
}

/// A row representation the engine runs on: u8 pixels or 64-pixel words. Widths are in pixels.
pub(crate) trait Lanes {
    type Unit: Copy + Default + PartialEq + Debug;
    /// Pixels per unit.
    const PX: usize;

    fn units(px: usize) -> usize {
        px.div_ceil(Self::PX)
    }
    /// A unit with every pixel at `value` (bits: set when nonzero).
    fn splat(value: u8) -> Self::Unit;
    /// A unit with every pixel equal to pixel `x` of `row`.
    fn pixel(row: &[Self::Unit], x: usize) -> Self::Unit;
    /// `dst[x] = op(a[x], b[x])` for `x < w`.
    fn combine(
        simd: Simd,
        m: Extremum,
        dst: &mut [Self::Unit],
        a: &[Self::Unit],
        b: Shifted<Self::Unit>,
        w: usize,
    );
    /// `dst[x] = op(dst[x], b[x])` for `x < w`.
    fn accumulate(
        simd: Simd,
        m: Extremum,
        dst: &mut [Self::Unit],
        b: Shifted<Self::Unit>,
        w: usize,
    );
    /// `dst[x] = b[x]` for `x < w`.
    fn shift(simd: Simd, dst: &mut [Self::Unit], b: Shifted<Self::Unit>, w: usize);
    /// Clears whatever lies past `w` pixels in each row (nothing for u8).
    fn trim(_image: &mut [Self::Unit], _g: Geometry) {}
    /// `dst = dst − a` (saturating; bits: `dst & !a`).
    fn difference(dst: &mut [Self::Unit], a: &[Self::Unit]);
    /// `dst = a − dst` (saturating; bits: `a & !dst`).
    fn difference_from(dst: &mut [Self::Unit], a: &[Self::Unit]);
    /// `dst &= a`.
    fn intersect(dst: &mut [Self::Unit], a: &[Self::Unit]);
    /// `dst = !a`.
    fn complement(dst: &mut [Self::Unit], a: &[Self::Unit]);

    fn neutral(m: Extremum) -> Self::Unit {
        Self::splat(match m {
            Extremum::Min => 255,
            Extremum::Max => 0,
        })
    }
}

/// Working memory kept between calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch<U> {
    rows: Vec<U>,
    images: Vec<Vec<U>>,
}

impl<U: Copy + Default> Scratch<U> {
    fn rows(&mut self, len: usize) -> &mut [U] {
        if self.rows.len() < len {
            self.rows.resize(len, U::default());
        }
        &mut self.rows[..len]
    }

    fn take_image(&mut self, len: usize) -> Vec<U> {
        let mut image = self.images.pop().unwrap_or_default();
        image.resize(len, U::default());
        image
    }

    fn give_back(&mut self, image: Vec<U>) {
        self.images.push(image);
    }
}

/// Runs `config` on `src` into `dst` (both `g`-shaped).
pub(crate) fn run<L: Lanes>(
    config: &Config,
    s: &mut Scratch<L::Unit>,
    src: &[L::Unit],
    dst: &mut [L::Unit],
    g: Geometry,
) {
    if g.width == 0 || g.height == 0 {
        return;
    }
    let pass = |p: &Pass, m, from: &[L::Unit], to: &mut [L::Unit], s: &mut Scratch<L::Unit>| {
        repeat_pass::<L>(config, p, m, from, to, g, s)
    };
    let (min, max) = (Extremum::Min, Extremum::Max);
    match &config.plan {
        Plan::Copy => dst.copy_from_slice(src),
        Plan::HitMiss { hit, miss } => {
            match hit {
                Some(p) => pass(p, min, src, dst, s),
                None => dst.fill(L::splat(255)),
            }
            if let Some(p) = miss {
                let mut inverted = s.take_image(src.len());
                let mut eroded = s.take_image(src.len());
                L::complement(&mut inverted, src);
                pass(p, min, &inverted, &mut eroded, s);
                L::intersect(dst, &eroded);
                s.give_back(eroded);
                s.give_back(inverted);
            }
        }
        Plan::Single(p) => match config.op {
            MorphOp::Erode => pass(p, min, src, dst, s),
            MorphOp::Dilate => pass(p, max, src, dst, s),
            MorphOp::Open | MorphOp::Close | MorphOp::TopHat | MorphOp::BlackHat => {
                let (first, second) = match config.op {
                    MorphOp::Open | MorphOp::TopHat => (min, max),
                    _ => (max, min),
                };
                let mut tmp = s.take_image(src.len());
                pass(p, first, src, &mut tmp, s);
                pass(p, second, &tmp, dst, s);
                s.give_back(tmp);
                match config.op {
                    MorphOp::TopHat => L::difference_from(dst, src),
                    MorphOp::BlackHat => L::difference(dst, src),
                    _ => {}
                }
            }
            MorphOp::Gradient => {
                pass(p, max, src, dst, s);
                let mut eroded = s.take_image(src.len());
                pass(p, min, src, &mut eroded, s);
                L::difference(dst, &eroded);
                s.give_back(eroded);
            }
            MorphOp::HitMiss => unreachable!("hit-or-miss is planned as Plan::HitMiss"),
        },
    }
    L::trim(dst, g);
}

fn repeat_pass<L: Lanes>(
    config: &Config,
    p: &Pass,
    m: Extremum,
    src: &[L::Unit],
    dst: &mut [L::Unit],
    g: Geometry,
    s: &mut Scratch<L::Unit>,
) {
    let (simd, border) = (config.simd, config.border);
    match &p.kind {
        PassKind::Copy => dst.copy_from_slice(src),
        PassKind::Rect(r) => rect_pass::<L>(simd, border, r, m, src, dst, g, s),
        PassKind::Runs(r) if p.repeat == 1 => runs_pass::<L>(simd, border, r, m, src, dst, g, s),
        PassKind::Runs(r) => {
            let mut tmp = s.take_image(src.len());
            // Alternate between dst and tmp so that the last pass writes dst.
            let (mut a, mut b) = if p.repeat % 2 == 1 {
                (&mut *dst, tmp.as_mut_slice())
            } else {
                (tmp.as_mut_slice(), &mut *dst)
            };
            runs_pass::<L>(simd, border, r, m, src, a, g, s);
            for _ in 1..p.repeat {
                runs_pass::<L>(simd, border, r, m, a, b, g, s);
                std::mem::swap(&mut a, &mut b);
            }
            s.give_back(tmp);
        }
    }
}

/// Fills for reads left and right of a row.
fn fills<L: Lanes>(border: Border, m: Extremum, row: &[L::Unit], w: usize) -> (L::Unit, L::Unit) {
    match border {
        Border::Neutral => (L::neutral(m), L::neutral(m)),
        Border::Constant(c) => (L::splat(c), L::splat(c)),
        Border::Replicate => (L::pixel(row, 0), L::pixel(row, w - 1)),
    }
}

/// Rows per band of the vertical pass: enough to amortise the per-call work, few enough to
/// stay in L1.
fn band_rows(row_bytes: usize, h: usize) -> usize {
    (24 * 1024 / row_bytes.max(1)).clamp(1, h)
}

#[allow(clippy::too_many_arguments)]
fn rect_pass<L: Lanes>(
    simd: Simd,
    border: Border,
    r: &RectPlan,
    m: Extremum,
    src: &[L::Unit],
    dst: &mut [L::Unit],
    g: Geometry,
    s: &mut Scratch<L::Unit>,
) {
    let Geometry {
        width: w,
        height: h,
        stride,
    } = g;
    let band = band_rows(stride * size_of::<L::Unit>(), h);
    let level_units = L::units(w + r.kw) + 1;
    let levels = if r.kw > DIRECT_MAX {
        r.kw.ilog2() as usize + 1
    } else {
        0
    };
    let (vbuf, lbuf) = s
        .rows(band * stride + levels * level_units)
        .split_at_mut(band * stride);
    let window = Window {
        d0: -(r.ax as isize),
        len: r.kw,
    };
    for y0 in (0..h).step_by(band) {
        let y1 = (y0 + band).min(h);
        let v = &mut vbuf[..(y1 - y0) * stride];
        // Vertical: start from the anchor row (always inside), then fold in the other rows,
        // whole band at once where the source rows are inside.
        v.copy_from_slice(&src[y0 * stride..y1 * stride]);
        for i in (0..r.kh).filter(|&i| i != r.ay) {
            let d = i as isize - r.ay as isize;
            let lo = (y0 as isize).max(-d);
            let hi = (y1 as isize).min(h as isize - d);
            if lo < hi {
                let n = (hi - lo) as usize * stride;
                let from = (lo + d) as usize * stride;
                let b = Shifted::new(&src[from..from + n], n * L::PX, 0, L::splat(0));
                L::accumulate(
                    simd,
                    m,
                    &mut v[(lo as usize - y0) * stride..][..n],
                    b,
                    n * L::PX,
                );
            }
            if border == Border::Neutral {
                continue;
            }
            for y in (y0..y1).filter(|&y| !(lo..hi).contains(&(y as isize))) {
                let b = match border {
                    Border::Constant(c) => Shifted::fill(L::splat(c)),
                    _ => {
                        let sy = (y as isize + d).clamp(0, h as isize - 1) as usize;
                        Shifted::new(&src[sy * stride..][..stride], w, 0, L::splat(0))
                    }
                };
                L::accumulate(simd, m, &mut v[(y - y0) * stride..][..stride], b, w);
            }
        }
        for y in y0..y1 {
            let row = &v[(y - y0) * stride..][..stride];
            let mut win = RowWindows::<L>::new(simd, border, m, row, w, r.ax, lbuf, level_units);
            win.window(&mut dst[y * stride..][..stride], window);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn runs_pass<L: Lanes>(
    simd: Simd,
    border: Border,
    r: &RunsPlan,
    m: Extremum,
    src: &[L::Unit],
    dst: &mut [L::Unit],
    g: Geometry,
    s: &mut Scratch<L::Unit>,
) {
    let Geometry {
        width: w,
        height: h,
        stride,
    } = g;
    let slot_len = r.windows.len() * stride;
    let level_units = L::units(w + r.max_left) + 1;
    let (ring, lbuf) = s
        .rows(r.kh * slot_len + r.levels * level_units)
        .split_at_mut(r.kh * slot_len);
    // Source rows whose windows are in the ring: [next - kh, next).
    let mut next = 0;
    for y in 0..h {
        let last = (y + r.kh - 1 - r.ay).min(h - 1);
        while next <= last {
            let row = &src[next * stride..][..stride];
            let slot = &mut ring[(next % r.kh) * slot_len..][..slot_len];
            let mut win =
                RowWindows::<L>::new(simd, border, m, row, w, r.max_left, lbuf, level_units);
            for (out, &window) in slot.chunks_exact_mut(stride).zip(&r.windows) {
                win.window(out, window);
            }
            next += 1;
        }
        let out = &mut dst[y * stride..][..stride];
        let mut first = true;
        for t in &r.terms {
            let sy = y as isize + t.dy;
            let inside = (0..h as isize).contains(&sy);
            // Replicate clamps to the first or last row, whose windows are still in the ring.
            let sy = sy.clamp(0, h as isize - 1) as usize;
            let b = match (border, t.source) {
                (Border::Neutral, _) if !inside => continue,
                (Border::Constant(c), _) if !inside => Shifted::fill(L::splat(c)),
                (_, TermSource::Pixel(d)) => {
                    let row = &src[sy * stride..][..stride];
                    let (lf, rf) = fills::<L>(border, m, row, w);
                    Shifted::new(row, w, d, if d < 0 { lf } else { rf })
                }
                (_, TermSource::Window(k)) => {
                    let at = (sy % r.kh) * slot_len + k * stride;
                    Shifted::new(&ring[at..][..stride], w, 0, L::splat(0))
                }
            };
            if first {
                L::shift(simd, out, b, w);
                first = false;
            } else {
                L::accumulate(simd, m, out, b, w);
            }
        }
        if first {
            L::shift(simd, out, Shifted::fill(L::neutral(m)), w);
        }
    }
}

/// Horizontal windows of one row: `out[x] = op(row[x + d0 .. x + d0 + len])`, with the row's
/// border fills outside. Long windows share doubling levels `R_k[t] = op(T[t .. t + k])` over
/// `T`, the row shifted right by `max_left` so that every window starts at `t >= 0`.
struct RowWindows<'a, L: Lanes> {
    simd: Simd,
    m: Extremum,
    row: &'a [L::Unit],
    w: usize,
    lf: L::Unit,
    rf: L::Unit,
    max_left: usize,
    levels: &'a mut [L::Unit],
    level_units: usize,
    ready: usize,
}

impl<'a, L: Lanes> RowWindows<'a, L> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        simd: Simd,
        border: Border,
        m: Extremum,
        row: &'a [L::Unit],
        w: usize,
        max_left: usize,
        levels: &'a mut [L::Unit],
        level_units: usize,
    ) -> Self {
        let (lf, rf) = fills::<L>(border, m, row, w);
        Self {
            simd,
            m,
            row,
            w,
            lf,
            rf,
            max_left,
            levels,
            level_units,
            ready: 0,
        }
    }

    fn at(&self, d: isize) -> Shifted<'a, L::Unit> {
        Shifted::new(self.row, self.w, d, if d < 0 { self.lf } else { self.rf })
    }

    fn window(&mut self, out: &mut [L::Unit], win: Window) {
        let (simd, m, w) = (self.simd, self.m, self.w);
        let offsets = win.d0..win.d0 + win.len as isize;
        if win.len <= DIRECT_MAX {
            // Start from the unshifted row when the window covers it: one op saved.
            let mut rest = offsets.clone().filter(|&d| d != 0 || !offsets.contains(&0));
            if offsets.contains(&0) {
                match rest.next() {
                    Some(d) => L::combine(simd, m, out, self.row, self.at(d), w),
                    None => L::shift(simd, out, self.at(0), w),
                }
            } else {
                L::shift(simd, out, self.at(win.d0), w);
                rest.next();
            }
            for d in rest {
                L::accumulate(simd, m, out, self.at(d), w);
            }
            return;
        }
        let wt = w + self.max_left;
        let lu = self.level_units;
        let k = win.len.ilog2() as usize;
        if self.ready == 0 {
            let t = Shifted::new(self.row, w, -(self.max_left as isize), self.lf);
            L::shift(simd, &mut self.levels[..lu], t, wt);
            self.ready = 1;
        }
        while self.ready <= k {
            let (done, todo) = self.levels.split_at_mut(self.ready * lu);
            let prev = &done[(self.ready - 1) * lu..];
            let half = 1isize << (self.ready - 1);
            L::combine(
                simd,
                m,
                &mut todo[..lu],
                prev,
                Shifted::new(prev, wt, half, self.rf),
                wt,
            );
            self.ready += 1;
        }
        let level = &self.levels[k * lu..][..lu];
        let start = win.d0 + self.max_left as isize;
        let tail = start + (win.len - (1 << k)) as isize;
        if start == 0 {
            L::combine(
                simd,
                m,
                out,
                level,
                Shifted::new(level, wt, tail, self.rf),
                w,
            );
        } else {
            L::shift(simd, out, Shifted::new(level, wt, start, self.rf), w);
            L::accumulate(simd, m, out, Shifted::new(level, wt, tail, self.rf), w);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// u8 lanes.

pub(crate) struct U8;

impl Extremum {
    fn pick(self, a: u8, b: u8) -> u8 {
        match self {
            Extremum::Min => a.min(b),
            Extremum::Max => a.max(b),
        }
    }
}

impl Lanes for U8 {
    type Unit = u8;
    const PX: usize = 1;

    fn splat(value: u8) -> u8 {
        value
    }

    fn pixel(row: &[u8], x: usize) -> u8 {
        row[x]
    }

    fn combine(simd: Simd, m: Extremum, dst: &mut [u8], a: &[u8], b: Shifted<u8>, w: usize) {
        let (inside, row) = b.split(w);
        for x in (0..inside.start).chain(inside.end..w) {
            dst[x] = m.pick(a[x], b.fill);
        }
        let (dst, a) = (&mut dst[inside.clone()], &a[inside]);
        kernels::min_max(
            simd,
            m,
            dst.as_mut_ptr(),
            a.as_ptr(),
            row.as_ptr(),
            row.len(),
        );
    }

    fn accumulate(simd: Simd, m: Extremum, dst: &mut [u8], b: Shifted<u8>, w: usize) {
        let (inside, row) = b.split(w);
        for x in (0..inside.start).chain(inside.end..w) {
            dst[x] = m.pick(dst[x], b.fill);
        }
        let d = dst[inside].as_mut_ptr();
        kernels::min_max(simd, m, d, d, row.as_ptr(), row.len());
    }

    fn shift(_simd: Simd, dst: &mut [u8], b: Shifted<u8>, w: usize) {
        let (inside, row) = b.split(w);
        dst[..inside.start].fill(b.fill);
        dst[inside.end..w].fill(b.fill);
        dst[inside].copy_from_slice(row);
    }

    fn difference(dst: &mut [u8], a: &[u8]) {
        dst.iter_mut()
            .zip(a)
            .for_each(|(d, &a)| *d = d.saturating_sub(a));
    }

    fn difference_from(dst: &mut [u8], a: &[u8]) {
        dst.iter_mut()
            .zip(a)
            .for_each(|(d, &a)| *d = a.saturating_sub(*d));
    }

    fn intersect(dst: &mut [u8], a: &[u8]) {
        dst.iter_mut().zip(a).for_each(|(d, &a)| *d &= a);
    }

    fn complement(dst: &mut [u8], a: &[u8]) {
        dst.iter_mut().zip(a).for_each(|(d, &a)| *d = !a);
    }
}

/// `dst[i] = min|max(a[i], b[i])` over `n` bytes; `a` may be `dst` itself.
mod kernels {
    use super::{Extremum, Simd};

    pub(super) fn min_max(
        simd: Simd,
        m: Extremum,
        dst: *mut u8,
        a: *const u8,
        b: *const u8,
        n: usize,
    ) {
        let max = m == Extremum::Max;
        // SAFETY: the callers pass pointers to `n` valid bytes (`dst` writable, `a` either
        // disjoint from `dst` or equal to it), and `simd` went through `Simd::is_available`.
        unsafe {
            let done = match (simd, max) {
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx512, false) => x86::avx512::<false>(dst, a, b, n),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx512, true) => x86::avx512::<true>(dst, a, b, n),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx2, false) => x86::avx2::<false>(dst, a, b, n),
                #[cfg(target_arch = "x86_64")]
                (Simd::Avx2, true) => x86::avx2::<true>(dst, a, b, n),
                #[cfg(target_arch = "x86_64")]
                (Simd::Sse2, false) => x86::sse2::<false>(dst, a, b, n),
                #[cfg(target_arch = "x86_64")]
                (Simd::Sse2, true) => x86::sse2::<true>(dst, a, b, n),
                #[cfg(target_arch = "aarch64")]
                (Simd::Neon, false) => arm::neon::<false>(dst, a, b, n),
                #[cfg(target_arch = "aarch64")]
                (Simd::Neon, true) => arm::neon::<true>(dst, a, b, n),
                _ => 0,
            };
            for i in done..n {
                let (x, y) = (*a.add(i), *b.add(i));
                *dst.add(i) = if max { x.max(y) } else { x.min(y) };
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        /// One x86 kernel per vector width: two vectors per iteration, returns the bytes done.
        macro_rules! kernel {
            ($name:ident, $feature:literal, $lanes:literal, $load:ident, $store:ident, $min:ident, $max:ident) => {
                #[target_feature(enable = $feature)]
                pub(super) unsafe fn $name<const MAX: bool>(
                    dst: *mut u8,
                    a: *const u8,
                    b: *const u8,
                    n: usize,
                ) -> usize {
                    let mut i = 0;
                    // SAFETY: the loop conditions keep every access within the n bytes that
                    // are readable at a and b and writable at dst.
                    unsafe {
                        while i + 2 * $lanes <= n {
                            let x0 = $load(a.add(i).cast());
                            let x1 = $load(a.add(i + $lanes).cast());
                            let y0 = $load(b.add(i).cast());
                            let y1 = $load(b.add(i + $lanes).cast());
                            let (r0, r1) = if MAX {
                                ($max(x0, y0), $max(x1, y1))
                            } else {
                                ($min(x0, y0), $min(x1, y1))
                            };
                            $store(dst.add(i).cast(), r0);
                            $store(dst.add(i + $lanes).cast(), r1);
                            i += 2 * $lanes;
                        }
                        if i + $lanes <= n {
                            let (x, y) = ($load(a.add(i).cast()), $load(b.add(i).cast()));
                            $store(dst.add(i).cast(), if MAX { $max(x, y) } else { $min(x, y) });
                            i += $lanes;
                        }
                    }
                    i
                }
            };
        }

        kernel!(
            sse2,
            "sse2",
            16,
            _mm_loadu_si128,
            _mm_storeu_si128,
            _mm_min_epu8,
            _mm_max_epu8
        );
        kernel!(
            avx2,
            "avx2",
            32,
            _mm256_loadu_si256,
            _mm256_storeu_si256,
            _mm256_min_epu8,
            _mm256_max_epu8
        );
        kernel!(
            avx512,
            "avx512f,avx512bw",
            64,
            _mm512_loadu_si512,
            _mm512_storeu_si512,
            _mm512_min_epu8,
            _mm512_max_epu8
        );
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use std::arch::aarch64::*;

        #[target_feature(enable = "neon")]
        pub(super) unsafe fn neon<const MAX: bool>(
            dst: *mut u8,
            a: *const u8,
            b: *const u8,
            n: usize,
        ) -> usize {
            let mut i = 0;
            // SAFETY: i + 32 <= n bytes are readable at a, b and writable at dst.
            unsafe {
                while i + 32 <= n {
                    let (x0, x1) = (vld1q_u8(a.add(i)), vld1q_u8(a.add(i + 16)));
                    let (y0, y1) = (vld1q_u8(b.add(i)), vld1q_u8(b.add(i + 16)));
                    let (r0, r1) = if MAX {
                        (vmaxq_u8(x0, y0), vmaxq_u8(x1, y1))
                    } else {
                        (vminq_u8(x0, y0), vminq_u8(x1, y1))
                    };
                    vst1q_u8(dst.add(i), r0);
                    vst1q_u8(dst.add(i + 16), r1);
                    i += 32;
                }
            }
            i
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// The plain per-pixel definition, kept as the specification the fast paths are tested against.
pub mod reference {
    use super::{
        Border, Image, MorphError, MorphOp, StructuringElement, check_size, resolve_anchor,
    };

    /// [`super::morphology_ex`], one pixel and one kernel element at a time.
    pub fn morphology_ex(
        src: &Image,
        dst: &mut Image,
        op: MorphOp,
        kernel: &StructuringElement,
        anchor: Option<(usize, usize)>,
        iterations: usize,
        border: Border,
    ) -> Result<(), MorphError> {
        if src.channels != 1 {
            return Err(MorphError::NotSingleChannel {
                channels: src.channels,
            });
        }
        let (kw, kh) = (kernel.width(), kernel.height());
        check_size(kw, kh)?;
        let anchor = resolve_anchor(anchor, kw, kh)?;
        let pass = |img: &Image, keep: &dyn Fn(i8) -> bool, max: bool| {
            let mask: Vec<bool> = kernel.values().iter().map(|&v| keep(v)).collect();
            erode_dilate(img, &mask, kw, kh, anchor, iterations, border, max)
        };
        let nonzero = |v: i8| v != 0;
        let sub = |a: &Image, b: &Image| zip(a, b, |x, y| x.saturating_sub(y));
        *dst = match op {
            MorphOp::Erode => pass(src, &nonzero, false)?,
            MorphOp::Dilate => pass(src, &nonzero, true)?,
            MorphOp::Open => pass(&pass(src, &nonzero, false)?, &nonzero, true)?,
            MorphOp::Close => pass(&pass(src, &nonzero, true)?, &nonzero, false)?,
            MorphOp::Gradient => sub(&pass(src, &nonzero, true)?, &pass(src, &nonzero, false)?),
            MorphOp::TopHat => sub(src, &pass(&pass(src, &nonzero, false)?, &nonzero, true)?),
            MorphOp::BlackHat => sub(&pass(&pass(src, &nonzero, true)?, &nonzero, false)?, src),
            MorphOp::HitMiss => {
                let has = |v: i8| kernel.values().contains(&v);
                if !kernel.values().iter().any(|&v| v != 0) {
                    src.clone()
                } else {
                    let all = |img: &Image| zip(img, img, |_, _| 255);
                    let hit = if has(1) {
                        pass(src, &|v| v == 1, false)?
                    } else {
                        all(src)
                    };
                    let inverted = zip(src, src, |x, _| !x);
                    let miss = if has(-1) {
                        pass(&inverted, &|v| v == -1, false)?
                    } else {
                        all(src)
                    };
                    zip(&hit, &miss, |x, y| x & y)
                }
            }
        };
        Ok(())
    }

    fn zip(a: &Image, b: &Image, f: impl Fn(u8, u8) -> u8) -> Image {
        let data = a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect();
        Image::from_vec(a.width, a.height, 1, data).expect("same size")
    }

    #[allow(clippy::too_many_arguments)]
    fn erode_dilate(
        src: &Image,
        mask: &[bool],
        kw: usize,
        kh: usize,
        (ax, ay): (usize, usize),
        iterations: usize,
        border: Border,
        max: bool,
    ) -> Result<Image, MorphError> {
        if iterations == 0 || kw * kh == 1 {
            return Ok(src.clone());
        }
        if mask.iter().all(|&m| m) && iterations > 1 {
            let n = iterations;
            let (kw, kh) = (kw + (n - 1) * (kw - 1), kh + (n - 1) * (kh - 1));
            return erode_dilate(
                src,
                &vec![true; kw * kh],
                kw,
                kh,
                (ax * n, ay * n),
                1,
                border,
                max,
            );
        }
        if !mask.contains(&true) {
            return Err(MorphError::NoActiveElement);
        }
        let (w, h) = (src.width as isize, src.height as isize);
        let mut img = src.clone();
        for _ in 0..iterations {
            let prev = img.clone();
            for y in 0..h {
                for x in 0..w {
                    let mut acc: Option<u8> = None;
                    for i in 0..kh {
                        for j in 0..kw {
                            if !mask[i * kw + j] {
                                continue;
                            }
                            let (sx, sy) =
                                (x + j as isize - ax as isize, y + i as isize - ay as isize);
                            let inside = (0..w).contains(&sx) && (0..h).contains(&sy);
                            let v = match border {
                                _ if inside => prev.data[(sy * w + sx) as usize],
                                Border::Neutral => continue,
                                Border::Constant(c) => c,
                                Border::Replicate => {
                                    prev.data
                                        [(sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1)) as usize]
                                }
                            };
                            acc = Some(acc.map_or(v, |a| if max { a.max(v) } else { a.min(v) }));
                        }
                    }
                    img.data[(y * w + x) as usize] = acc.unwrap_or(if max { 0 } else { 255 });
                }
            }
        }
        Ok(img)
    }
}
