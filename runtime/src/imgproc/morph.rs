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
//! [`super::bitmask`]. Its one primitive, a gather, writes the min/max of up to 16 rows read
//! at pixel offsets, over a band of rows per call (the row loop runs inside the vector
//! kernels). A rectangle is separated: a vertical pass over source rows (output rows in
//! pairs, sharing the rows they have in common), then the horizontal window of each result,
//! gathered directly or by doubling (`log2(width)` gathers). Other elements are cut into
//! horizontal runs: runs shared by several kernel rows are computed once per source row as
//! windows, the others are single-pixel terms, and each output row gathers them all.
//! Horizontal reads go to guarded copies of the rows, whose margins hold the border's fill,
//! so no kernel deals with image edges; elements made of single pixels only (a cross) skip
//! the copies on u8 images, gathering inside columns straight from the source and the edge
//! columns as narrow strips. The kernels use `std::arch` (SSE2, AVX2, AVX-512 on
//! x86-64, NEON on aarch64; scalar elsewhere) because the release profile's `opt-level = "s"`
//! disables auto-vectorisation. [`reference`] holds the plain per-pixel definition the fast
//! paths are tested against.

use std::fmt::Debug;
use std::marker::PhantomData;

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

/// The instruction set of the row kernels. [`Simd::detect`] picks one the CPU has; the others
/// exist so that tests and benchmarks can run every implementation.
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
                    && std::arch::is_x86_feature_detected!("avx2")
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

    /// The widest available instruction set. AVX-512 runs the u8 kernels no faster than
    /// AVX2 (they are bound by loads and stores) but the bit-packed ones up to 1.3× faster at
    /// 1920×1080 (measured on Zen 4).
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
    terms: Vec<RunTerm>,
    windows: Vec<Window>,
    /// Farthest read to the left of the anchor.
    left: usize,
    /// Farthest read to the right of the anchor.
    right: usize,
}

#[derive(Clone, Copy, Debug)]
struct RunTerm {
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

/// Unshared runs up to this length become single-pixel terms.
const INLINE_MAX: usize = 5;

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
        // Runs (dy, window) of every row.
        let mut runs = Vec::new();
        for (i, row) in mask.chunks_exact(kw).enumerate() {
            let mut j = 0;
            while j < kw {
                let j1 = j;
                while j < kw && row[j] {
                    j += 1;
                }
                if j > j1 {
                    let win = Window {
                        d0: j1 as isize - ax as isize,
                        len: j - j1,
                    };
                    runs.push((i as isize - ay as isize, win));
                }
                j += 1;
            }
        }
        // A window pays off when rows share it; a short one used once is cheaper as pixels.
        let mut terms = Vec::new();
        let mut windows = Vec::new();
        for &(dy, win) in &runs {
            let shared = runs.iter().filter(|r| r.1 == win).count() > 1;
            if win.len == 1 || (!shared && win.len <= INLINE_MAX) {
                terms.extend((0..win.len as isize).map(|i| RunTerm {
                    dy,
                    source: TermSource::Pixel(win.d0 + i),
                }));
                continue;
            }
            let k = windows.iter().position(|&w| w == win).unwrap_or_else(|| {
                windows.push(win);
                windows.len() - 1
            });
            terms.push(RunTerm {
                dy,
                source: TermSource::Window(k),
            });
        }
        // Farthest reads left and right of the anchor, single pixels included.
        let reach = |t: &RunTerm| match t.source {
            TermSource::Pixel(d) => (d, d),
            TermSource::Window(k) => (windows[k].d0, windows[k].d0 + windows[k].len as isize - 1),
        };
        let left = terms
            .iter()
            .map(|t| (-reach(t).0).max(0) as usize)
            .max()
            .unwrap_or(0);
        let right = terms
            .iter()
            .map(|t| reach(t).1.max(0) as usize)
            .max()
            .unwrap_or(0);
        let plan = RunsPlan {
            kh,
            terms,
            windows,
            left,
            right,
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

/// One operand of [`Lanes::gather`]: rows starting at `data`, `stride` units apart, read
/// `shift` pixels further than the output.
#[derive(Clone, Copy)]
pub(crate) struct Term<'a, U> {
    pub data: &'a [U],
    pub stride: usize,
    pub shift: usize,
}

impl<'a, U> Term<'a, U> {
    fn new(data: &'a [U], stride: usize, shift: usize) -> Self {
        Self {
            data,
            stride,
            shift,
        }
    }
}

/// A row representation the engine runs on: u8 pixels or 64-pixel words. Widths are in pixels.
pub(crate) trait Lanes {
    type Unit: Copy + Default + PartialEq + Debug;
    /// Pixels per unit.
    const PX: usize;
    /// Windows up to this length are gathered directly, longer ones by doubling.
    const DIRECT: usize;

    fn units(px: usize) -> usize {
        px.div_ceil(Self::PX)
    }
    /// A unit with every pixel at `value` (bits: set when nonzero).
    fn splat(value: u8) -> Self::Unit;
    /// A unit with every pixel equal to pixel `x` of `row`.
    fn pixel(row: &[Self::Unit], x: usize) -> Self::Unit;
    /// Units of margin a guarded row needs so that reads up to `reach` pixels beyond either
    /// end of the row (and a kernel's look-ahead) stay inside it.
    fn margin(reach: usize) -> usize;
    /// Guards `row`, whose `w` pixels start at unit `margin`: `left` before them, `right` after
    /// them up to the end of `row` (pixels past `w` in their last unit included).
    fn fill_margins(
        row: &mut [Self::Unit],
        w: usize,
        margin: usize,
        left: Self::Unit,
        right: Self::Unit,
    );
    /// For `r < rows` and the first `n` units of each row: `dst[r] = op over terms t of
    /// t.data[r * t.stride ..] read t.shift pixels further`, over `dst[r]` itself too when
    /// `acc`. Reads must stay inside each term's data; rows of `dst` are `stride` apart.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        simd: Simd,
        m: Extremum,
        dst: &mut [Self::Unit],
        stride: usize,
        rows: usize,
        n: usize,
        terms: &[Term<Self::Unit>],
        acc: bool,
    );
    /// `dst[r] = op over i < kh of src[r + i]` for `r < rows` (first `n` units of each row);
    /// rows of `src` are `stride` apart, of `dst` `dst_stride` apart.
    #[allow(clippy::too_many_arguments)]
    fn vertical(
        simd: Simd,
        m: Extremum,
        dst: &mut [Self::Unit],
        dst_stride: usize,
        src: &[Self::Unit],
        stride: usize,
        rows: usize,
        kh: usize,
        n: usize,
    ) where
        Self: Sized,
    {
        let terms = (0..kh).map(|i| Term::new(&src[i * stride..], stride, 0));
        gather_all::<Self>(simd, m, dst, dst_stride, rows, n, terms);
    }
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

/// Terms per [`Lanes::gather`] call; more are folded in by further calls.
pub(crate) const MAX_TERMS: usize = 16;

/// [`Lanes::gather`] over any number of terms; returns false (leaving `dst` alone) when there
/// is none.
#[allow(clippy::too_many_arguments)]
fn gather_all<'a, L: Lanes>(
    simd: Simd,
    m: Extremum,
    dst: &mut [L::Unit],
    stride: usize,
    rows: usize,
    n: usize,
    terms: impl Iterator<Item = Term<'a, L::Unit>>,
) -> bool
where
    L::Unit: 'a,
{
    let mut chunk = heapless::Vec::<Term<'a, L::Unit>, MAX_TERMS>::new();
    let mut acc = false;
    for t in terms {
        if chunk.is_full() {
            L::gather(simd, m, dst, stride, rows, n, &chunk, acc);
            acc = true;
            chunk.clear();
        }
        let _ = chunk.push(t);
    }
    if !chunk.is_empty() {
        L::gather(simd, m, dst, stride, rows, n, &chunk, acc);
        acc = true;
    }
    acc
}

/// Working memory kept between calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch<U> {
    rows: Vec<U>,
    /// The layout whose margins `rows` still holds: a pass with the same one skips refilling
    /// them (on small images that refill costs a quarter of a bit-packed pass).
    margins: Option<Margins<U>>,
    images: Vec<Vec<U>>,
}

/// Guarded rows `[0, rows)` of `len` units, pixels `[margin, margin + w)`, filled with
/// `left` before and `right` after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Margins<U> {
    rows: usize,
    len: usize,
    margin: usize,
    w: usize,
    left: U,
    right: U,
}

impl<U: Copy + Default> Scratch<U> {
    /// The first `len` units of the row buffer, and the margins it holds.
    fn rows(&mut self, len: usize) -> (&mut [U], &mut Option<Margins<U>>) {
        if self.rows.len() < len {
            self.rows.resize(len, U::default());
        }
        (&mut self.rows[..len], &mut self.margins)
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

/// Rows per band: enough to amortise each call over rows, few enough that a band's working
/// rows (`row_bytes` per image row) stay in `budget` bytes of cache.
fn band_rows(row_bytes: usize, budget: usize, h: usize) -> usize {
    (budget / row_bytes.max(1)).max(4).min(h)
}

/// Where the border takes source row `sy` from.
enum RowSource {
    Image(usize),
    Constant,
    /// Neutral: the row does not take part.
    Skip,
}

fn row_source(border: Border, sy: isize, h: usize) -> RowSource {
    match border {
        _ if (0..h as isize).contains(&sy) => RowSource::Image(sy as usize),
        Border::Neutral => RowSource::Skip,
        Border::Replicate => RowSource::Image(sy.clamp(0, h as isize - 1) as usize),
        Border::Constant(_) => RowSource::Constant,
    }
}

/// A rectangle: per band of rows, the vertical min/max of the source rows, then the
/// horizontal window of the result.
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
    let windows = Windows::<L>::new(simd, m, border, w, r.ax, r.kw - 1 - r.ax, r.kw);
    let band = band_rows(
        windows.units_for(1) / 2 * size_of::<L::Unit>(),
        24 * 1024,
        h,
    );
    let (buf, margins) = s.rows(windows.units_for(band) + stride);
    let (gbuf, constant) = buf.split_at_mut(windows.units_for(band));
    if let Border::Constant(c) = border {
        constant.fill(L::splat(c));
    }
    let window = Window {
        d0: -(r.ax as isize),
        len: r.kw,
    };
    let (n, len, margin) = (L::units(w), windows.row_len, windows.margin);
    windows.prepare(gbuf, band, margins);
    for y0 in (0..h).step_by(band) {
        let (y1, rows) = ((y0 + band).min(h), (y0 + band).min(h) - y0);
        // The vertical min/max goes straight into the guarded rows: rows whose source rows
        // are all inside in one call, the others row by row.
        let ya = y0.max(r.ay).min(y1);
        let yb = y1.min((h + r.ay).saturating_sub(r.kh - 1)).max(ya);
        if ya < yb {
            let (out, from) = (
                &mut gbuf[(ya - y0) * len + margin..],
                &src[(ya - r.ay) * stride..],
            );
            L::vertical(simd, m, out, len, from, stride, yb - ya, r.kh, n);
        }
        for y in (y0..ya).chain(yb..y1) {
            let sy = |i: usize| y as isize + i as isize - r.ay as isize;
            let terms = (0..r.kh).filter_map(|i| match row_source(border, sy(i), h) {
                RowSource::Image(row) => Some(Term::new(&src[row * stride..], 0, 0)),
                RowSource::Constant => Some(Term::new(&constant[..], 0, 0)),
                RowSource::Skip => None,
            });
            gather_all::<L>(
                simd,
                m,
                &mut gbuf[(y - y0) * len + margin..],
                len,
                1,
                n,
                terms,
            );
        }
        windows.finish(gbuf, rows);
        windows.window(
            gbuf,
            rows,
            &mut dst[y0 * stride..y1 * stride],
            stride,
            window,
        );
    }
}

/// Any other element: per band, the run windows of the source rows it reads, then per output
/// row the min/max over every run's source row.
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
    if L::PX == 1 && r.windows.is_empty() && w >= DIRECT_MIN_WIDTH.max(4 * (r.left + r.right)) {
        return direct_pass::<L>(simd, border, r, m, src, dst, g, s);
    }
    let longest = r.windows.iter().map(|win| win.len).max().unwrap_or(1);
    let windows = Windows::<L>::new(simd, m, border, w, r.left, r.right, longest);
    let n = L::units(w);
    let nwin = r.windows.len();
    let halo = r.kh - 1;
    let row_bytes = (windows.units_for(1) / 2 + nwin * n) * size_of::<L::Unit>();
    // Bands re-read `halo` source rows: make that small against the band.
    let band = band_rows(row_bytes, 96 * 1024, h).max(8 * halo).min(h);
    let src_rows = band + halo;
    let (buf, margins) =
        s.rows(windows.units_for(src_rows) + src_rows * nwin * n + windows.row_len);
    let (gbuf, rest) = buf.split_at_mut(windows.units_for(src_rows));
    let (wbuf, constant) = rest.split_at_mut(src_rows * nwin * n);
    if let Border::Constant(c) = border {
        constant.fill(L::splat(c));
    }
    let (row_len, margin_px) = (windows.row_len, windows.margin * L::PX);
    windows.prepare(gbuf, src_rows, margins);
    let dy_min = r.terms.iter().map(|t| t.dy).min().unwrap_or(0);
    let dy_max = r.terms.iter().map(|t| t.dy).max().unwrap_or(0);
    for y0 in (0..h).step_by(band) {
        let y1 = (y0 + band).min(h);
        // Source rows [s0, s1): those the band reads, clamped into the image (a replicated
        // border reads the first or last row for the others).
        let clamp = |y: isize| y.clamp(0, h as isize - 1) as usize;
        let (s0, s1) = (
            clamp(y0 as isize + dy_min),
            clamp(y1 as isize - 1 + dy_max) + 1,
        );
        windows.load(&src[s0 * stride..], stride, s1 - s0, gbuf);
        for (out, &win) in wbuf.chunks_exact_mut(src_rows * n).zip(&r.windows) {
            windows.window(gbuf, s1 - s0, out, n, win);
        }
        let (gbuf, wbuf) = (&*gbuf, &*wbuf);
        // The term of run t for output rows from y (source rows from y + dy, consecutive).
        let term = |t: &RunTerm, y: usize| -> Option<Term<L::Unit>> {
            Some(match (row_source(border, y as isize + t.dy, h), t.source) {
                (RowSource::Image(row), TermSource::Pixel(d)) => {
                    let shift = (margin_px as isize + d) as usize;
                    Term::new(&gbuf[(row - s0) * row_len..], row_len, shift)
                }
                (RowSource::Image(row), TermSource::Window(k)) => {
                    Term::new(&wbuf[(k * src_rows + row - s0) * n..], n, 0)
                }
                (RowSource::Constant, _) => Term::new(&constant[..], 0, 0),
                (RowSource::Skip, _) => return None,
            })
        };
        // Rows whose terms are all inside, in one gather; the others row by row.
        let ya = (y0 as isize).max(-dy_min).min(y1 as isize) as usize;
        let yb = (y1 as isize).min(h as isize - dy_max).max(ya as isize) as usize;
        if ya < yb {
            let terms = r.terms.iter().filter_map(|t| term(t, ya));
            gather_all::<L>(simd, m, &mut dst[ya * stride..], stride, yb - ya, n, terms);
        }
        for y in (y0..ya).chain(yb..y1) {
            let out = &mut dst[y * stride..][..n];
            if !gather_all::<L>(
                simd,
                m,
                out,
                stride,
                1,
                n,
                r.terms.iter().filter_map(|t| term(t, y)),
            ) {
                // Every row outside and ignored: the neutral value, as OpenCV's +-infinity.
                out.fill(L::neutral(m));
            }
        }
    }
}

/// Rows at least this wide (and four times the element's reach) skip the guarded copies in
/// [`direct_pass`].
const DIRECT_MIN_WIDTH: usize = 64;
/// Edge strips of a direct pass are at least one 16-byte vector wide, so that they run the
/// vector kernels instead of the scalar tails (measured 5% faster at 640×480).
const STRIP_MIN_WIDTH: usize = 16;

/// Single-pixel terms only, on pixel lanes: the columns whose reads all fall inside the image
/// gather straight from the source, so no row is copied (a quarter of the loads and stores
/// of a cross 3×3, 15% faster at 1920×1080); the columns at each edge go through
/// [`runs_pass`] as two narrow strips of the image, exact up to the columns the inside gather
/// then overwrites.
#[allow(clippy::too_many_arguments)]
fn direct_pass<L: Lanes>(
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
    let (x0, reach) = (r.left, r.left + r.right);
    let strip = Geometry {
        width: reach.max(STRIP_MIN_WIDTH),
        ..g
    };
    runs_pass::<L>(simd, border, r, m, src, dst, strip, s);
    let x1 = w - strip.width;
    runs_pass::<L>(simd, border, r, m, &src[x1..], &mut dst[x1..], strip, s);
    let ni = w - reach;
    let mut constant = s.take_image(ni);
    if let Border::Constant(c) = border {
        constant.fill(L::splat(c));
    }
    let term = |t: &RunTerm, y: usize| -> Option<Term<L::Unit>> {
        let TermSource::Pixel(d) = t.source else {
            unreachable!("direct passes have no windows")
        };
        Some(match row_source(border, y as isize + t.dy, h) {
            RowSource::Image(row) => {
                Term::new(&src[row * stride + (x0 as isize + d) as usize..], stride, 0)
            }
            RowSource::Constant => Term::new(&constant[..], 0, 0),
            RowSource::Skip => return None,
        })
    };
    let dy_min = r.terms.iter().map(|t| t.dy).min().unwrap_or(0);
    let dy_max = r.terms.iter().map(|t| t.dy).max().unwrap_or(0);
    let ya = ((-dy_min).max(0) as usize).min(h);
    let yb = ((h as isize - dy_max.max(0)).max(0) as usize).max(ya);
    if ya < yb {
        let terms = r.terms.iter().filter_map(|t| term(t, ya));
        gather_all::<L>(
            simd,
            m,
            &mut dst[ya * stride + x0..],
            stride,
            yb - ya,
            ni,
            terms,
        );
    }
    for y in (0..ya).chain(yb..h) {
        let out = &mut dst[y * stride + x0..][..ni];
        if !gather_all::<L>(
            simd,
            m,
            out,
            stride,
            1,
            ni,
            r.terms.iter().filter_map(|t| term(t, y)),
        ) {
            out.fill(L::neutral(m));
        }
    }
    s.give_back(constant);
}

/// Horizontal windows `out[x] = op(row[x + d0 .. x + d0 + len])` over rows read from guarded
/// copies (margins hold the border's fill). Short windows are one gather; long ones use
/// doubling levels `R_k[t] = op(G[t .. t + k])` over the guarded rows `G`. A loaded band is
/// `1 + levels` planes of `rows` guarded rows, `row_len` units apart.
struct Windows<L: Lanes> {
    simd: Simd,
    m: Extremum,
    border: Border,
    w: usize,
    /// Units of margin on each side of a guarded row.
    margin: usize,
    /// Units stored per row: the margins and pixels windows read, plus slack that doubling
    /// reads past the end.
    row_len: usize,
    /// Doubling levels beyond the guarded rows themselves (0 when every window is short).
    levels: usize,
    lanes: PhantomData<L>,
}

impl<L: Lanes> Windows<L> {
    fn new(
        simd: Simd,
        m: Extremum,
        border: Border,
        w: usize,
        left: usize,
        right: usize,
        longest: usize,
    ) -> Self {
        let levels = if longest > L::DIRECT {
            longest.ilog2() as usize
        } else {
            0
        };
        // Level k is exact up to 2^k - 1 pixels before the end of the row; the margin keeps
        // every window read before that.
        let margin = L::margin(left.max(right) + (1 << levels)) + 1;
        let row_len = 2 * margin + L::units(w) + L::units(1 << levels) + 2;
        Self {
            simd,
            m,
            border,
            w,
            margin,
            row_len,
            levels,
            lanes: PhantomData,
        }
    }

    /// Units of a loaded band of `rows` rows: `1 + levels` planes of one more row (levels are
    /// computed over whole rows, and the last row's overrun lands in the extra one).
    fn units_for(&self, rows: usize) -> usize {
        (1 + self.levels) * (rows + 1) * self.row_len
    }

    /// Units per plane of a band buffer sized by [`Self::units_for`]. Planes keep their place
    /// when a band has fewer rows, so levels never overwrite the margins [`Self::prepare`]
    /// keeps between calls.
    fn plane(&self, buf: &[L::Unit]) -> usize {
        buf.len() / (1 + self.levels)
    }

    /// The fills of a row whose pixels start at unit `margin`.
    fn fills(&self, row: &[L::Unit]) -> (L::Unit, L::Unit) {
        match self.border {
            Border::Neutral => (L::neutral(self.m), L::neutral(self.m)),
            Border::Constant(c) => (L::splat(c), L::splat(c)),
            Border::Replicate => (
                L::pixel(&row[self.margin..], 0),
                L::pixel(&row[self.margin..], self.w - 1),
            ),
        }
    }

    /// Whether margins depend on the row: replicated pixels, or pixels sharing the last unit.
    fn margins_per_row(&self) -> bool {
        self.border == Border::Replicate || !self.w.is_multiple_of(L::PX)
    }

    /// Prepares `rows` rows of `buf` for [`Self::load`] and [`Self::finish`]: margins that
    /// depend on no row are written here, unless `held` says `buf` has them already (nothing
    /// but the pixels of guarded rows is written between passes). `held` is updated.
    fn prepare(&self, buf: &mut [L::Unit], rows: usize, held: &mut Option<Margins<L::Unit>>) {
        if self.margins_per_row() {
            *held = None;
            return;
        }
        let (left, right) = self.fills(&buf[..self.row_len]);
        let wanted = Margins {
            rows,
            len: self.row_len,
            margin: self.margin,
            w: self.w,
            left,
            right,
        };
        if *held == Some(wanted) {
            return;
        }
        for row in buf[..rows * self.row_len].chunks_exact_mut(self.row_len) {
            L::fill_margins(row, self.w, self.margin, left, right);
        }
        *held = Some(wanted);
    }

    /// Copies `rows` rows of `src` (`stride` apart) into `buf`, then [`Self::finish`]es them.
    fn load(&self, src: &[L::Unit], stride: usize, rows: usize, buf: &mut [L::Unit]) {
        let (simd, m, len) = (self.simd, self.m, self.row_len);
        let copy = [Term::new(src, stride, 0)];
        L::gather(
            simd,
            m,
            &mut buf[self.margin..],
            len,
            rows,
            L::units(self.w),
            &copy,
            false,
        );
        self.finish(buf, rows);
    }

    /// Guards the `rows` rows in `buf` (their pixels in place, prepared) and computes their
    /// levels.
    fn finish(&self, buf: &mut [L::Unit], rows: usize) {
        let (len, simd, m) = (self.row_len, self.simd, self.m);
        if self.margins_per_row() {
            for row in buf[..rows * len].chunks_exact_mut(len) {
                let (left, right) = self.fills(row);
                L::fill_margins(row, self.w, self.margin, left, right);
            }
        }
        let plane = self.plane(buf);
        for i in 1..=self.levels {
            // Level i at t joins level i - 1 at t and t + 2^(i-1), over whole rows at once:
            // what a row's end reads from the next row is never used by a window.
            let (done, todo) = buf.split_at_mut(i * plane);
            let prev = &done[(i - 1) * plane..];
            let terms = [Term::new(prev, len, 0), Term::new(prev, len, 1 << (i - 1))];
            L::gather(simd, m, todo, len, rows, len, &terms, false);
        }
    }

    /// `win` of `rows` rows loaded in `buf`, into `out` (rows `stride` apart).
    fn window(
        &self,
        buf: &[L::Unit],
        rows: usize,
        out: &mut [L::Unit],
        stride: usize,
        win: Window,
    ) {
        let (simd, m, n, len) = (self.simd, self.m, L::units(self.w), self.row_len);
        let start = ((self.margin * L::PX) as isize + win.d0) as usize;
        if win.len <= L::DIRECT {
            let terms = (0..win.len).map(|i| Term::new(buf, len, start + i));
            gather_all::<L>(simd, m, out, stride, rows, n, terms);
            return;
        }
        let k = win.len.ilog2() as usize;
        let plane = self.plane(buf);
        let level = &buf[k * plane..][..plane];
        let terms = [
            Term::new(level, len, start),
            Term::new(level, len, start + win.len - (1 << k)),
        ];
        L::gather(simd, m, out, stride, rows, n, &terms, false);
    }
}

// ---------------------------------------------------------------------------------------------
// u8 lanes.

pub(crate) struct U8;

impl Lanes for U8 {
    type Unit = u8;
    const PX: usize = 1;
    const DIRECT: usize = 8;

    fn splat(value: u8) -> u8 {
        value
    }

    fn pixel(row: &[u8], x: usize) -> u8 {
        row[x]
    }

    fn margin(reach: usize) -> usize {
        reach
    }

    fn fill_margins(row: &mut [u8], w: usize, margin: usize, left: u8, right: u8) {
        row[..margin].fill(left);
        row[margin + w..].fill(right);
    }

    fn vertical(
        simd: Simd,
        m: Extremum,
        dst: &mut [u8],
        dst_stride: usize,
        src: &[u8],
        stride: usize,
        rows: usize,
        kh: usize,
        n: usize,
    ) {
        if rows == 0 || n == 0 {
            return;
        }
        assert!(
            (rows - 1) * dst_stride + n <= dst.len(),
            "dst rows out of bounds"
        );
        assert!(
            (rows + kh - 2) * stride + n <= src.len(),
            "src rows out of bounds"
        );
        // SAFETY: the rows were bounds-checked above; `simd` went through `is_available`.
        let op = match m {
            Extremum::Min => kernels::ByteOp::Min,
            Extremum::Max => kernels::ByteOp::Max,
        };
        unsafe {
            kernels::vertical(
                simd,
                op,
                dst.as_mut_ptr(),
                dst_stride,
                src.as_ptr(),
                stride,
                rows,
                kh,
                n,
            )
        };
    }

    fn gather(
        simd: Simd,
        m: Extremum,
        dst: &mut [u8],
        stride: usize,
        rows: usize,
        n: usize,
        terms: &[Term<u8>],
        acc: bool,
    ) {
        if rows == 0 || n == 0 {
            return;
        }
        // Packed rows (every stride == n): one run over the whole band.
        let (rows, n) = if rows > 1 && stride == n && terms.iter().all(|t| t.stride == n) {
            (1, rows * n)
        } else {
            (rows, n)
        };
        assert!(
            (rows - 1) * stride + n <= dst.len(),
            "dst rows out of bounds"
        );
        let d = dst.as_mut_ptr();
        let mut srcs = [(std::ptr::null::<u8>(), 0); MAX_TERMS + 1];
        let first = usize::from(acc);
        if acc {
            srcs[0] = (d.cast_const(), stride);
        }
        for (s, t) in srcs[first..].iter_mut().zip(terms) {
            assert!(
                (rows - 1) * t.stride + t.shift + n <= t.data.len(),
                "term rows out of bounds"
            );
            *s = (t.data[t.shift..].as_ptr(), t.stride);
        }
        // SAFETY: every row of dst and of each term was bounds-checked above; `simd` went
        // through `Simd::is_available`.
        unsafe { kernels::min_max(simd, m, d, stride, &srcs[..first + terms.len()], rows, n) };
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

/// `dst[r][i] = min|max over sources s of s[r][i]` for `r < rows`, `i < n`: each source is a
/// pointer and its row stride; one may be `dst` itself (read before written at each byte).
pub(crate) mod kernels {
    use super::{Extremum, MAX_TERMS, Simd};

    /// A byte-wise operation of [`vertical`]: min/max of u8 pixels, AND/OR of bit words.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum ByteOp {
        Min,
        Max,
        And,
        Or,
    }

    const MIN: u8 = 0;
    const MAX: u8 = 1;
    const AND: u8 = 2;
    const OR: u8 = 3;

    /// Row pointers of the sources, moved down a row by [`next_row`].
    fn first_row(srcs: &[(*const u8, usize)]) -> [*const u8; MAX_TERMS + 1] {
        let mut ptrs = [std::ptr::null(); MAX_TERMS + 1];
        for (p, &(s, _)) in ptrs.iter_mut().zip(srcs) {
            *p = s;
        }
        ptrs
    }

    fn next_row(ptrs: &mut [*const u8; MAX_TERMS + 1], srcs: &[(*const u8, usize)]) {
        for (p, &(_, stride)) in ptrs.iter_mut().zip(srcs) {
            *p = p.wrapping_add(stride);
        }
    }

    /// # Safety
    /// For every `r < rows`: `n` bytes writable at `dst + r * stride` and readable at every
    /// source's row `r`; `simd` available.
    pub(super) unsafe fn min_max(
        simd: Simd,
        m: Extremum,
        dst: *mut u8,
        stride: usize,
        srcs: &[(*const u8, usize)],
        rows: usize,
        n: usize,
    ) {
        let max = m == Extremum::Max;
        // SAFETY: per the contract; AVX-512 implies AVX2, which implies SSE2, and each kernel
        // gets at least one vector of bytes per row. AVX-512 only from two vectors on: on
        // shorter rows its overlapping last vector redoes too much.
        let done = match (simd, max) {
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, false) if n >= 128 => unsafe {
                x86::avx512::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, true) if n >= 128 => unsafe {
                x86::avx512::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, false) if n >= 32 => unsafe {
                x86::avx2::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, true) if n >= 32 => unsafe {
                x86::avx2::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, false) if n >= 16 => unsafe {
                x86::sse2::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, true) if n >= 16 => unsafe {
                x86::sse2::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, false) if n >= 16 => unsafe {
                arm::neon::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, true) if n >= 16 => unsafe {
                arm::neon::<true>(dst, stride, srcs, rows, n)
            },
            _ => false,
        };
        if done {
            return;
        }
        let mut ptrs = first_row(srcs);
        for r in 0..rows {
            let d = dst.wrapping_add(r * stride);
            for i in 0..n {
                // SAFETY: per the contract.
                unsafe {
                    let mut v = *ptrs[0].add(i);
                    for p in &ptrs[1..srcs.len()] {
                        let u = *p.add(i);
                        v = if max { v.max(u) } else { v.min(u) };
                    }
                    *d.add(i) = v;
                }
            }
            next_row(&mut ptrs, srcs);
        }
    }

    /// `dst[r] = op over i < kh of src[r + i]` for `r < rows`, `n` bytes per row; pairs of
    /// output rows share the `kh - 1` source rows they have in common.
    ///
    /// # Safety
    /// `n` bytes writable at each of the `rows` rows of `dst` (`dst_stride` apart) and
    /// readable at each of the `rows + kh - 1` rows of `src` (`stride` apart), not overlapping
    /// `dst`; `simd` available.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn vertical(
        simd: Simd,
        op: ByteOp,
        dst: *mut u8,
        dst_stride: usize,
        src: *const u8,
        stride: usize,
        rows: usize,
        kh: usize,
        n: usize,
    ) {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        let args = (dst, dst_stride, src, stride, rows, kh, n);
        let op = match op {
            ByteOp::Min => MIN,
            ByteOp::Max => MAX,
            ByteOp::And => AND,
            ByteOp::Or => OR,
        };
        // SAFETY: per the contract; AVX-512 implies AVX2, which implies SSE2, and each kernel
        // gets at least one vector of bytes per row. AVX-512 only from two vectors on: on
        // shorter rows its overlapping last vector redoes too much.
        let done = match (simd, op) {
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, MIN) if n >= 128 => unsafe { x86::vertical_avx512::<MIN>(args) },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, MAX) if n >= 128 => unsafe { x86::vertical_avx512::<MAX>(args) },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, AND) if n >= 128 => unsafe { x86::vertical_avx512::<AND>(args) },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, OR) if n >= 128 => unsafe { x86::vertical_avx512::<OR>(args) },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, MIN) if n >= 32 => unsafe {
                x86::vertical_avx2::<MIN>(args)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, MAX) if n >= 32 => unsafe {
                x86::vertical_avx2::<MAX>(args)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, AND) if n >= 32 => unsafe {
                x86::vertical_avx2::<AND>(args)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, OR) if n >= 32 => unsafe { x86::vertical_avx2::<OR>(args) },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, MIN) if n >= 16 => unsafe {
                x86::vertical_sse2::<MIN>(args)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, MAX) if n >= 16 => unsafe {
                x86::vertical_sse2::<MAX>(args)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, AND) if n >= 16 => unsafe {
                x86::vertical_sse2::<AND>(args)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, OR) if n >= 16 => unsafe {
                x86::vertical_sse2::<OR>(args)
            },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, MIN) if n >= 16 => unsafe { arm::vertical_neon::<MIN>(args) },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, MAX) if n >= 16 => unsafe { arm::vertical_neon::<MAX>(args) },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, AND) if n >= 16 => unsafe { arm::vertical_neon::<AND>(args) },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, OR) if n >= 16 => unsafe { arm::vertical_neon::<OR>(args) },
            _ => false,
        };
        if done {
            return;
        }
        let f = |a: u8, b: u8| match op {
            MIN => a.min(b),
            MAX => a.max(b),
            AND => a & b,
            _ => a | b,
        };
        for r in 0..rows {
            for i in 0..n {
                // SAFETY: per the contract.
                unsafe {
                    let mut v = *src.add(r * stride + i);
                    for j in 1..kh {
                        v = f(v, *src.add((r + j) * stride + i));
                    }
                    *dst.add(r * dst_stride + i) = v;
                }
            }
        }
    }

    /// (dst, dst_stride, src, stride, rows, kh, n) of [`vertical`].
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    type VerticalArgs = (*mut u8, usize, *const u8, usize, usize, usize, usize);

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::{VerticalArgs, first_row, next_row};
        use std::arch::x86_64::*;

        /// One x86 kernel per vector width, four vectors per step; needs `n >= $lanes`. The
        /// last step of a row ends at `n`, overlapping the previous one: redoing bytes is
        /// harmless, min and max being idempotent.
        macro_rules! kernel {
            ($name:ident, $vertical:ident, $feature:literal, $lanes:literal, $load:ident,
             $store:ident, $min:ident, $max:ident, $and:ident, $or:ident) => {
                /// [`super::vertical`]: output rows in pairs, the `kh - 1` rows they share
                /// loaded once.
                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn $vertical<const OP: u8>(
                    (dst, dst_stride, src, stride, rows, kh, n): VerticalArgs,
                ) -> bool {
                    let mut r = 0;
                    while r < rows {
                        let pair = r + 1 < rows && kh > 1;
                        let (d0, d1) = (
                            dst.wrapping_add(r * dst_stride),
                            dst.wrapping_add((r + 1) * dst_stride),
                        );
                        let top = src.wrapping_add(r * stride);
                        let mut i = 0;
                        // SAFETY: every access stays within the n bytes of the rows the caller
                        // guarantees (row r + kh only when r + 1 < rows).
                        unsafe {
                            while i < n {
                                let at = i.min(n - $lanes);
                                let row = |j: usize| $load(top.add(j * stride + at).cast());
                                let op = |a, b| match OP {
                                    super::MIN => $min(a, b),
                                    super::MAX => $max(a, b),
                                    super::AND => $and(a, b),
                                    _ => $or(a, b),
                                };
                                if pair {
                                    let mut common = row(1);
                                    for j in 2..kh {
                                        common = op(common, row(j));
                                    }
                                    $store(d0.add(at).cast(), op(common, row(0)));
                                    $store(d1.add(at).cast(), op(common, row(kh)));
                                } else {
                                    let mut v = row(0);
                                    for j in 1..kh {
                                        v = op(v, row(j));
                                    }
                                    $store(d0.add(at).cast(), v);
                                }
                                i = at + $lanes;
                            }
                        }
                        r += if pair { 2 } else { 1 };
                    }
                    true
                }

                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn $name<const MAX: bool>(
                    dst: *mut u8,
                    stride: usize,
                    srcs: &[(*const u8, usize)],
                    rows: usize,
                    n: usize,
                ) -> bool {
                    let count = srcs.len();
                    let mut ptrs = first_row(srcs);
                    for r in 0..rows {
                        let dst = dst.wrapping_add(r * stride);
                        let (first, rest) = (ptrs[0], &ptrs[1..count]);
                        let mut i = 0;
                        // SAFETY: every access stays within the n bytes of row r that are
                        // readable at each source and writable at dst.
                        unsafe {
                            let op = |a, b| if MAX { $max(a, b) } else { $min(a, b) };
                            while i + 4 * $lanes <= n {
                                let at =
                                    |p: *const u8, j: usize| $load(p.add(i + j * $lanes).cast());
                                let (mut v0, mut v1, mut v2, mut v3) =
                                    (at(first, 0), at(first, 1), at(first, 2), at(first, 3));
                                for &s in rest {
                                    (v0, v1, v2, v3) = (
                                        op(v0, at(s, 0)),
                                        op(v1, at(s, 1)),
                                        op(v2, at(s, 2)),
                                        op(v3, at(s, 3)),
                                    );
                                }
                                $store(dst.add(i).cast(), v0);
                                $store(dst.add(i + $lanes).cast(), v1);
                                $store(dst.add(i + 2 * $lanes).cast(), v2);
                                $store(dst.add(i + 3 * $lanes).cast(), v3);
                                i += 4 * $lanes;
                            }
                            while i < n {
                                let at = i.min(n - $lanes);
                                let mut v = $load(first.add(at).cast());
                                for s in rest {
                                    let u = $load(s.add(at).cast());
                                    v = if MAX { $max(v, u) } else { $min(v, u) };
                                }
                                $store(dst.add(at).cast(), v);
                                i = at + $lanes;
                            }
                        }
                        next_row(&mut ptrs, srcs);
                    }
                    true
                }
            };
        }

        kernel!(
            sse2,
            vertical_sse2,
            "sse2",
            16,
            _mm_loadu_si128,
            _mm_storeu_si128,
            _mm_min_epu8,
            _mm_max_epu8,
            _mm_and_si128,
            _mm_or_si128
        );
        kernel!(
            avx2,
            vertical_avx2,
            "avx2",
            32,
            _mm256_loadu_si256,
            _mm256_storeu_si256,
            _mm256_min_epu8,
            _mm256_max_epu8,
            _mm256_and_si256,
            _mm256_or_si256
        );
        kernel!(
            avx512,
            vertical_avx512,
            "avx512f,avx512bw",
            64,
            _mm512_loadu_si512,
            _mm512_storeu_si512,
            _mm512_min_epu8,
            _mm512_max_epu8,
            _mm512_and_si512,
            _mm512_or_si512
        );
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use super::{VerticalArgs, first_row, next_row};
        use std::arch::aarch64::*;

        /// As the x86 vertical kernels, 16 bytes per vector; needs `n >= 16`.
        #[target_feature(enable = "neon")]
        pub(in super::super) unsafe fn vertical_neon<const OP: u8>(
            (dst, dst_stride, src, stride, rows, kh, n): VerticalArgs,
        ) -> bool {
            let mut r = 0;
            while r < rows {
                let pair = r + 1 < rows && kh > 1;
                let (d0, d1) = (
                    dst.wrapping_add(r * dst_stride),
                    dst.wrapping_add((r + 1) * dst_stride),
                );
                let top = src.wrapping_add(r * stride);
                let mut i = 0;
                // SAFETY: every access stays within the n bytes of the rows the caller
                // guarantees (row r + kh only when r + 1 < rows).
                unsafe {
                    while i < n {
                        let at = i.min(n - 16);
                        let row = |j: usize| vld1q_u8(top.add(j * stride + at));
                        let op = |a, b| match OP {
                            super::MIN => vminq_u8(a, b),
                            super::MAX => vmaxq_u8(a, b),
                            super::AND => vandq_u8(a, b),
                            _ => vorrq_u8(a, b),
                        };
                        if pair {
                            let mut common = row(1);
                            for j in 2..kh {
                                common = op(common, row(j));
                            }
                            vst1q_u8(d0.add(at), op(common, row(0)));
                            vst1q_u8(d1.add(at), op(common, row(kh)));
                        } else {
                            let mut v = row(0);
                            for j in 1..kh {
                                v = op(v, row(j));
                            }
                            vst1q_u8(d0.add(at), v);
                        }
                        i = at + 16;
                    }
                }
                r += if pair { 2 } else { 1 };
            }
            true
        }

        /// As the x86 kernels, 16 bytes per vector; needs `n >= 16`.
        #[target_feature(enable = "neon")]
        pub(in super::super) unsafe fn neon<const MAX: bool>(
            dst: *mut u8,
            stride: usize,
            srcs: &[(*const u8, usize)],
            rows: usize,
            n: usize,
        ) -> bool {
            let count = srcs.len();
            let mut ptrs = first_row(srcs);
            for r in 0..rows {
                let dst = dst.wrapping_add(r * stride);
                let (first, rest) = (ptrs[0], &ptrs[1..count]);
                let mut i = 0;
                // SAFETY: every access stays within the n bytes of row r that are readable at
                // each source and writable at dst.
                unsafe {
                    while i + 32 <= n {
                        let (mut v0, mut v1) =
                            (vld1q_u8(first.add(i)), vld1q_u8(first.add(i + 16)));
                        for s in rest {
                            let (u0, u1) = (vld1q_u8(s.add(i)), vld1q_u8(s.add(i + 16)));
                            (v0, v1) = if MAX {
                                (vmaxq_u8(v0, u0), vmaxq_u8(v1, u1))
                            } else {
                                (vminq_u8(v0, u0), vminq_u8(v1, u1))
                            };
                        }
                        vst1q_u8(dst.add(i), v0);
                        vst1q_u8(dst.add(i + 16), v1);
                        i += 32;
                    }
                    while i < n {
                        let at = i.min(n - 16);
                        let mut v = vld1q_u8(first.add(at));
                        for s in rest {
                            let u = vld1q_u8(s.add(at));
                            v = if MAX { vmaxq_u8(v, u) } else { vminq_u8(v, u) };
                        }
                        vst1q_u8(dst.add(at), v);
                        i = at + 16;
                    }
                }
                next_row(&mut ptrs, srcs);
            }
            true
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
