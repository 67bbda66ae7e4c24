//! Smoothing filters with OpenCV 5's `u8` arithmetic: normalised box filter (`blur`), Gaussian
//! blur (the bit-exact fixed-point path) and 3×3 / 5×5 median.
//!
//! Separable filters run row by row: each bordered source row is filtered horizontally once into
//! a ring of `kh` rows, which the vertical pass combines into one output row.

use super::Image;
use std::cell::Cell;
use thiserror::Error;

thread_local! {
    static PORTABLE: Cell<bool> = const { Cell::new(false) };
}

/// Whether row kernels may use their AVX2 build on this thread.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && !PORTABLE.with(Cell::get)
}

/// Runs `f` with every row kernel in its portable build on this thread, so tests can check the
/// AVX2 builds against it.
#[doc(hidden)]
pub fn portable_kernels<R>(f: impl FnOnce() -> R) -> R {
    let old = PORTABLE.replace(true);
    let r = f();
    PORTABLE.set(old);
    r
}

/// Defines a row kernel compiled twice from one body: portable, and on x86-64 with AVX2, which
/// is picked at run time when the CPU has it. The body must be plain loops and inlined helpers,
/// so each build vectorises with its own registers; both give identical results.
macro_rules! simd_fn {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if $crate::imgproc::filter::avx2() {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    imp($($arg),*)
                }
                // SAFETY: `avx2()` checked the CPU supports the enabled features.
                return unsafe { avx2($($arg),*) };
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

/// Why a filter was refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum FilterError {
    /// The source image has no pixels: check the frame was captured.
    #[error("empty source image: {width}x{height}")]
    Empty { width: usize, height: usize },
    /// The kernel size is not one this filter supports (`reason` says which). Pass a supported
    /// size, e.g. an odd one for Gaussian and Sobel.
    #[error("kernel size {width}x{height}: {reason}")]
    KernelSize {
        width: usize,
        height: usize,
        reason: &'static str,
    },
}

pub(crate) fn check_source(src: &Image) -> Result<(), FilterError> {
    if src.width == 0 || src.height == 0 {
        return Err(FilterError::Empty {
            width: src.width,
            height: src.height,
        });
    }
    Ok(())
}

/// How pixels outside the image are made up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Border {
    /// `BORDER_CONSTANT`: this value in every channel.
    Constant(u8),
    /// `BORDER_REPLICATE`: `aaa|abcd|ddd`.
    Replicate,
    /// `BORDER_REFLECT`: `cba|abcd|dcb`.
    Reflect,
    /// `BORDER_REFLECT_101`, OpenCV's default for filters: `dcb|abcd|cba`.
    #[default]
    Reflect101,
}

impl Border {
    /// The source index standing in for `p` in a line of `len` samples (`borderInterpolate`);
    /// `None` for a constant border.
    pub(crate) fn index(self, p: isize, len: usize) -> Option<usize> {
        let n = len as isize;
        if (0..n).contains(&p) {
            return Some(p as usize);
        }
        let delta = match self {
            Border::Constant(_) => return None,
            Border::Replicate => return Some(p.clamp(0, n - 1) as usize),
            Border::Reflect => 0,
            Border::Reflect101 => 1,
        };
        if n == 1 {
            return Some(0);
        }
        let mut p = p;
        while !(0..n).contains(&p) {
            p = if p < 0 {
                -p - 1 + delta
            } else {
                n - 1 - (p - n) - delta
            };
        }
        Some(p as usize)
    }
}

/// Source rows extended by `left` and `right` border pixels, fetched by (possibly outside) row
/// index.
pub(crate) struct Padded<'a> {
    src: &'a Image,
    border: Border,
    left: usize,
    /// Source column (or `None` for a constant) of each left and right border pixel.
    left_cols: Vec<Option<usize>>,
    right_cols: Vec<Option<usize>>,
    buf: Vec<u8>,
}

impl<'a> Padded<'a> {
    pub(crate) fn new(src: &'a Image, border: Border, left: usize, right: usize) -> Self {
        let w = src.width as isize;
        let cols =
            |range: std::ops::Range<isize>| range.map(|x| border.index(x, src.width)).collect();
        Self {
            src,
            border,
            left,
            left_cols: cols(-(left as isize)..0),
            right_cols: cols(w..w + right as isize),
            buf: vec![0; (src.width + left + right) * src.channels],
        }
    }

    /// Padded row `y` (may lie outside the image); `(width + left + right) × channels` samples.
    pub(crate) fn row(&mut self, y: isize) -> &[u8] {
        let cn = self.src.channels;
        let fill = match self.border {
            Border::Constant(v) => v,
            _ => 0,
        };
        let Some(sy) = self.border.index(y, self.src.height) else {
            self.buf.fill(fill);
            return &self.buf;
        };
        let row = self.src.row(sy);
        let (left, rest) = self.buf.split_at_mut(self.left * cn);
        let (inner, right) = rest.split_at_mut(row.len());
        inner.copy_from_slice(row);
        for (px, c) in left
            .chunks_exact_mut(cn)
            .zip(&self.left_cols)
            .chain(right.chunks_exact_mut(cn).zip(&self.right_cols))
        {
            match c {
                Some(sx) => px.copy_from_slice(&row[sx * cn..(sx + 1) * cn]),
                None => px.fill(fill),
            }
        }
        &self.buf
    }
}

/// The `kh` horizontally filtered rows around one output row, top to bottom.
pub(crate) struct Window<'a, H> {
    ring: &'a [Vec<H>],
    start: usize,
}

impl<'a, H> Window<'a, H> {
    #[inline(always)]
    pub(crate) fn rows(&self) -> impl Iterator<Item = &'a [H]> + '_ {
        let n = self.ring.len();
        (0..n).map(move |j| self.ring[(self.start + j) % n].as_slice())
    }
}

/// Runs a separable filter with anchor at the kernel centre (`k / 2`): `hpass` filters a padded
/// source row (`kw - 1` extra pixels) into a row of `H`; `vpass` combines the `kh` horizontal
/// rows around output row `y` into that row.
pub(crate) fn separable<H: Copy + Default>(
    src: &Image,
    kw: usize,
    kh: usize,
    border: Border,
    mut hpass: impl FnMut(&[u8], &mut [H]),
    mut vpass: impl FnMut(usize, Window<'_, H>),
) {
    let (ax, ay) = (kw / 2, kh / 2);
    let mut padded = Padded::new(src, border, ax, kw - 1 - ax);
    let n = src.width * src.channels;
    let mut ring: Vec<Vec<H>> = vec![vec![H::default(); n]; kh];
    for y in 0..src.height {
        // Padded row index p lives in ring slot p mod kh; only the newest row is computed once
        // the ring is primed.
        let first = if y == 0 { 0 } else { kh - 1 };
        for j in first..kh {
            let p = y as isize + j as isize - ay as isize;
            hpass(padded.row(p), &mut ring[(y + j) % kh]);
        }
        vpass(
            y,
            Window {
                ring: &ring,
                start: y % kh,
            },
        );
    }
}

/// Multiply-accumulate arithmetic of the filter passes.
pub(crate) trait Mac<T>:
    Copy + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + From<T>
{
}

impl<T, A> Mac<T> for A where
    A: Copy + Default + std::ops::Add<Output = A> + std::ops::Mul<Output = A> + From<T>
{
}

/// `out[x] = finish(Σ k[i] · taps[i][x])`: one pass with every tap in flight, so short kernels
/// keep their sums in registers.
#[inline(always)]
fn dot_taps<T: Copy, A: Mac<T>, O, const N: usize>(
    taps: [&[T]; N],
    k: &[A],
    out: &mut [O],
    finish: impl Fn(A) -> O,
) {
    let n = out.len();
    let (taps, k): ([&[T]; N], &[A; N]) = (taps.map(|t| &t[..n]), k.try_into().unwrap());
    for (x, o) in out.iter_mut().enumerate() {
        *o = finish((0..N).fold(A::default(), |s, i| s + A::from(taps[i][x]) * k[i]));
    }
}

/// `out[x] = finish(Σ k[i] · taps[i][x])` for any number of taps, one tap per pass into `acc`.
#[inline(always)]
fn accumulate<'a, T: Copy + 'a, A: Mac<T>, O>(
    taps: impl Iterator<Item = &'a [T]>,
    k: &[A],
    acc: &mut Vec<A>,
    out: &mut [O],
    finish: impl Fn(A) -> O,
) {
    acc.clear();
    acc.resize(out.len(), A::default());
    for (t, &w) in taps.zip(k) {
        for (a, &p) in acc.iter_mut().zip(t) {
            *a = *a + A::from(p) * w;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = finish(a);
    }
}

/// `out[x] = Σ k[i] · row[i·cn + x]` (horizontal pass over a padded row).
#[inline(always)]
pub(crate) fn hconv<T: Copy, A: Mac<T>>(row: &[T], k: &[A], cn: usize, out: &mut [A]) {
    let tap = |i: usize| &row[i * cn..];
    let id = |a| a;
    match k.len() {
        3 => dot_taps(std::array::from_fn::<_, 3, _>(tap), k, out, id),
        5 => dot_taps(std::array::from_fn::<_, 5, _>(tap), k, out, id),
        7 => dot_taps(std::array::from_fn::<_, 7, _>(tap), k, out, id),
        _ => {
            out.fill(A::default());
            for (i, &w) in k.iter().enumerate() {
                for (o, &p) in out.iter_mut().zip(tap(i)) {
                    *o = *o + A::from(p) * w;
                }
            }
        }
    }
}

/// `out[x] = finish(Σ k[j] · rows[j][x])` down the window (vertical pass); `acc` is scratch for
/// long kernels.
#[inline(always)]
pub(crate) fn vconv<H: Copy, A: Mac<H>, O>(
    rows: Window<'_, H>,
    k: &[A],
    acc: &mut Vec<A>,
    out: &mut [O],
    finish: impl Fn(A) -> O,
) {
    let mut it = rows.rows();
    let mut row = |_| it.next().unwrap();
    match k.len() {
        3 => dot_taps(std::array::from_fn::<_, 3, _>(&mut row), k, out, finish),
        5 => dot_taps(std::array::from_fn::<_, 5, _>(&mut row), k, out, finish),
        7 => dot_taps(std::array::from_fn::<_, 7, _>(&mut row), k, out, finish),
        _ => accumulate(rows.rows(), k, acc, out, finish),
    }
}

/// Normalised box filter (`cv::blur`) with a `kw × kh` kernel anchored at its centre.
pub fn box_blur(
    src: &Image,
    kw: usize,
    kh: usize,
    border: Border,
    dst: &mut Image,
) -> Result<(), FilterError> {
    check_source(src)?;
    if kw == 0 || kh == 0 {
        return Err(FilterError::KernelSize {
            width: kw,
            height: kh,
            reason: "must not be zero",
        });
    }
    let area = kw * kh;
    dst.reshape(src.width, src.height, src.channels);
    let cn = src.channels;
    // OpenCV sums in 16 bits when they fit and then divides in fixed point
    // (`ColumnSum<ushort, uchar>`): out = (s + delta) · mul >> 23, which rounds a little
    // differently from the nearest integer (2×1 and 1×2 kernels even add one).
    let (mul, delta) = {
        let scalef = f64::from(1u32 << 23) / area as f64;
        let floor = scalef.floor();
        if scalef - floor < 0.5 {
            (floor as u32, area as u32 / 2 + 1)
        } else {
            (floor as u32 + 1, area as u32 / 2)
        }
    };
    let scale = (1.0 / area as f64) as f32;
    let out = &mut dst.data;
    let width = src.width * cn;
    if area == 1 {
        out.copy_from_slice(&src.data);
        return Ok(());
    }
    if area <= 256 {
        let (ones_w, ones_h) = (vec![1u16; kw], vec![1u16; kh]);
        let mut acc = Vec::new();
        separable(
            src,
            kw,
            kh,
            border,
            |row, h: &mut [u16]| row_u8_u16(row, &ones_w, cn, h),
            |y, rows| {
                box_vrow(
                    rows,
                    &ones_h,
                    &mut acc,
                    mul,
                    delta,
                    &mut out[y * width..][..width],
                )
            },
        );
    } else {
        let (ones_w, ones_h) = (vec![1u32; kw], vec![1u32; kh]);
        let mut acc = Vec::new();
        separable(
            src,
            kw,
            kh,
            border,
            |row, h: &mut [u32]| hconv(row, &ones_w, cn, h),
            |y, rows| {
                vconv(
                    rows,
                    &ones_h,
                    &mut acc,
                    &mut out[y * width..][..width],
                    |s| (s as f32 * scale).round_ties_even().min(255.0) as u8,
                )
            },
        );
    }
    Ok(())
}

simd_fn! {
    /// Horizontal pass into 16-bit sums (box: ones; Gaussian: 8-bit fixed-point taps).
    fn row_u8_u16(row: &[u8], k: &[u16], cn: usize, out: &mut [u16]) {
        hconv(row, k, cn, out)
    }
}

simd_fn! {
    /// Vertical box sum and OpenCV's fixed-point division of one row.
    fn box_vrow(rows: Window<'_, u16>, ones: &[u16], acc: &mut Vec<u16>, mul: u32, delta: u32, out: &mut [u8]) {
        vconv(rows, ones, acc, out, |s| (((u32::from(s) + delta) * mul) >> 23).min(255) as u8);
    }
}

/// The Gaussian kernel OpenCV uses (`getGaussianKernel`, bit-exact variant): `ksize` taps with
/// standard deviation `sigma`, or, when `sigma <= 0`, `0.3·((ksize-1)·0.5 - 1) + 0.8` (fixed
/// tables for ksize 1, 3, 5, 7 and 9). Sums to one.
pub fn gaussian_kernel(ksize: usize, sigma: f64) -> Vec<f64> {
    if sigma <= 0.0 {
        match ksize {
            1 => return vec![1.0],
            3 => return vec![0.25, 0.5, 0.25],
            5 => return vec![0.0625, 0.25, 0.375, 0.25, 0.0625],
            7 => {
                return vec![
                    0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125,
                ];
            }
            9 => {
                return [4.0, 13.0, 30.0, 51.0, 60.0, 51.0, 30.0, 13.0, 4.0]
                    .map(|v| v / 256.0)
                    .to_vec();
            }
            _ => {}
        }
    }
    let sigma = if sigma > 0.0 {
        sigma
    } else {
        (ksize as f64).mul_add(0.15, 0.35)
    };
    let scale2 = -0.125 / (sigma * sigma);
    let half = (ksize - 1) / 2;
    // Taps are evaluated at x = 2·(i - (n-1)/2) to stay integral, hence the quartered scale.
    let values: Vec<f64> = (0..half)
        .map(|i| {
            let x = 2 * i as i64 + 1 - ksize as i64;
            ((x * x) as f64 * scale2).exp()
        })
        .collect();
    let mut sum = values.iter().sum::<f64>() * 2.0 + 1.0;
    if ksize.is_multiple_of(2) {
        sum += 1.0;
    }
    let mul = 1.0 / sum;
    let mut k = vec![mul; ksize];
    for (i, v) in values.iter().enumerate() {
        k[i] = v * mul;
        k[ksize - 1 - i] = v * mul;
    }
    k
}

/// `kernel` in 8-bit fixed point summing to exactly 256, rounded with error diffusion from the
/// outside in (`getGaussianKernelFixedPoint_ED`).
fn fixed_point_kernel(kernel: &[f64]) -> Vec<u32> {
    let n = kernel.len();
    let mut out = vec![0u32; n];
    let mut err = 0.0;
    let mut sum = 0;
    for i in 0..n / 2 {
        let adj = kernel[i] * 256.0 + err;
        let v = adj.round_ties_even();
        err = adj - v;
        out[i] = v as u32;
        out[n - 1 - i] = v as u32;
        sum += 2 * v as u32;
    }
    out[n / 2] = 256 - sum;
    out
}

/// The kernel size OpenCV derives from `sigma` for `u8` images when none is given.
fn ksize_for(sigma: f64) -> usize {
    ((sigma * 6.0 + 1.0).round_ties_even() as usize) | 1
}

/// Gaussian blur (`cv::GaussianBlur` on `u8`): `kw × kh` taps (0 = derive from sigma), standard
/// deviations `sigma_x`, `sigma_y` (`sigma_y <= 0` copies `sigma_x`; both `<= 0` derive them
/// from the sizes). Uses OpenCV's bit-exact fixed-point arithmetic: 8-bit kernels, exact sums,
/// one rounding.
pub fn gaussian_blur(
    src: &Image,
    (kw, kh): (usize, usize),
    sigma_x: f64,
    sigma_y: f64,
    border: Border,
    dst: &mut Image,
) -> Result<(), FilterError> {
    check_source(src)?;
    let sigma_y = if sigma_y <= 0.0 { sigma_x } else { sigma_y };
    let kw = if kw == 0 && sigma_x > 0.0 {
        ksize_for(sigma_x)
    } else {
        kw
    };
    let kh = if kh == 0 && sigma_y > 0.0 {
        ksize_for(sigma_y)
    } else {
        kh
    };
    if kw.is_multiple_of(2) || kh.is_multiple_of(2) {
        return Err(FilterError::KernelSize {
            width: kw,
            height: kh,
            reason: "must be odd",
        });
    }
    let kx = fixed_point_kernel(&gaussian_kernel(kw, sigma_x.max(0.0)));
    let ky = fixed_point_kernel(&gaussian_kernel(kh, sigma_y.max(0.0)));
    let cn = src.channels;
    let width = src.width * cn;
    dst.reshape(src.width, src.height, cn);
    let out = &mut dst.data;
    let mut acc = Vec::new();
    // Horizontal sums fit 16 bits (the kernel sums to 256), vertical ones 32.
    let kx: Vec<u16> = kx.iter().map(|&k| k as u16).collect();
    separable(
        src,
        kw,
        kh,
        border,
        |row, h: &mut [u16]| row_u8_u16(row, &kx, cn, h),
        |y, rows| gaussian_vrow(rows, &ky, &mut acc, &mut out[y * width..][..width]),
    );
    Ok(())
}

simd_fn! {
    /// Vertical Gaussian pass of one row and the single rounding to `u8`.
    fn gaussian_vrow(rows: Window<'_, u16>, k: &[u32], acc: &mut Vec<u32>, out: &mut [u8]) {
        vconv(rows, k, acc, out, |a| ((a + (1 << 15)) >> 16).min(255) as u8);
    }
}

/// Median of each 3×3 or 5×5 neighbourhood per channel (`cv::medianBlur`; the border replicates
/// edge pixels, as OpenCV's always does).
pub fn median_blur(src: &Image, ksize: usize, dst: &mut Image) -> Result<(), FilterError> {
    check_source(src)?;
    if ksize != 3 && ksize != 5 {
        return Err(FilterError::KernelSize {
            width: ksize,
            height: ksize,
            reason: "median supports 3 and 5",
        });
    }
    let r = ksize / 2;
    let cn = src.channels;
    let width = src.width * cn;
    dst.reshape(src.width, src.height, cn);
    let mut padded = Padded::new(src, Border::Replicate, r, r);
    let mut ring: Vec<Vec<u8>> = (0..ksize)
        .map(|j| padded.row(j as isize - r as isize).to_vec())
        .collect();
    let mut work = vec![0u8; if ksize == 5 { 25 * width } else { 0 }];
    for y in 0..src.height {
        if y > 0 {
            ring.rotate_left(1);
            ring[ksize - 1].copy_from_slice(padded.row((y + r) as isize));
        }
        let out = &mut dst.data[y * width..][..width];
        if ksize == 3 {
            median3_row(&ring[0], &ring[1], &ring[2], cn, out);
            continue;
        }
        for (tap, (row, dx)) in work.chunks_exact_mut(width).zip(
            ring.iter()
                .flat_map(|row| (0..ksize).map(move |dx| (row, dx))),
        ) {
            tap.copy_from_slice(&row[dx * cn..dx * cn + width]);
        }
        median_row(&mut work, out);
    }
    Ok(())
}

simd_fn! {
    /// 3×3 medians of one row from its three padded source rows (`cn` interleaved channels):
    /// each pixel's 9 taps go through Devillard's median-of-9 exchange network (19
    /// compare-exchanges, the median ends in slot 4) in registers, so the loop vectorises over
    /// pixels with no tap rows stored.
    fn median3_row(r0: &[u8], r1: &[u8], r2: &[u8], cn: usize, out: &mut [u8]) {
        let n = out.len();
        let (a0, a1, a2) = (&r0[..n], &r0[cn..cn + n], &r0[2 * cn..2 * cn + n]);
        let (b0, b1, b2) = (&r1[..n], &r1[cn..cn + n], &r1[2 * cn..2 * cn + n]);
        let (c0, c1, c2) = (&r2[..n], &r2[cn..cn + n], &r2[2 * cn..2 * cn + n]);
        for i in 0..n {
            let mut p = [a0[i], a1[i], a2[i], b0[i], b1[i], b2[i], c0[i], c1[i], c2[i]];
            macro_rules! exchange {
                ($(($x:literal, $y:literal)),*) => {$(
                    let (u, v) = (p[$x], p[$y]);
                    (p[$x], p[$y]) = (u.min(v), u.max(v));
                )*};
            }
            exchange!(
                (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
                (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)
            );
            out[i] = p[4];
        }
    }
}

/// Devillard's median-of-25 exchange network (99 compare-exchanges; the median ends in slot 12).
#[rustfmt::skip]
const MEDIAN25: [(u8, u8); 99] = [
    (0, 1), (3, 4), (2, 4), (2, 3), (6, 7), (5, 7), (5, 6), (9, 10), (8, 10), (8, 9), (12, 13),
    (11, 13), (11, 12), (15, 16), (14, 16), (14, 15), (18, 19), (17, 19), (17, 18), (21, 22),
    (20, 22), (20, 21), (23, 24), (2, 5), (3, 6), (0, 6), (0, 3), (4, 7), (1, 7), (1, 4), (11, 14),
    (8, 14), (8, 11), (12, 15), (9, 15), (9, 12), (13, 16), (10, 16), (10, 13), (20, 23), (17, 23),
    (17, 20), (21, 24), (18, 24), (18, 21), (19, 22), (8, 17), (9, 18), (0, 18), (0, 9), (10, 19),
    (1, 19), (1, 10), (11, 20), (2, 20), (2, 11), (12, 21), (3, 21), (3, 12), (13, 22), (4, 22),
    (4, 13), (14, 23), (5, 23), (5, 14), (15, 24), (6, 24), (6, 15), (7, 16), (7, 19), (13, 21),
    (15, 23), (7, 13), (7, 15), (1, 9), (3, 11), (5, 17), (11, 17), (9, 17), (4, 10), (6, 12),
    (7, 14), (4, 6), (4, 7), (12, 14), (10, 14), (6, 7), (10, 12), (6, 10), (6, 17), (12, 17),
    (7, 17), (7, 10), (12, 18), (7, 12), (10, 18), (12, 20), (10, 20), (10, 12),
];

simd_fn! {
    /// 5×5 medians of one row: `work` holds the row's 25 shifted taps back to back; the
    /// exchange network runs across whole rows of taps (each exchange one long vector loop).
    fn median_row(work: &mut [u8], out: &mut [u8]) {
        let n = out.len();
        for &(a, b) in &MEDIAN25 {
            let (a, b) = (usize::from(a), usize::from(b));
            let (lo, hi) = (a.min(b), a.max(b));
            let (head, tail) = work.split_at_mut(hi * n);
            let (x, y) = (&mut head[lo * n..][..n], &mut tail[..n]);
            let (first, second) = if a < b { (x, y) } else { (y, x) };
            for (p, q) in first.iter_mut().zip(second.iter_mut()) {
                let (u, v) = (*p, *q);
                (*p, *q) = (u.min(v), u.max(v));
            }
        }
        let mid = work.len() / n / 2;
        out.copy_from_slice(&work[mid * n..][..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_follow_border_interpolate() {
        let at = |b: Border, p: isize| b.index(p, 4);
        assert_eq!(
            [-2, -1, 4, 5].map(|p| at(Border::Reflect101, p)),
            [Some(2), Some(1), Some(2), Some(1)]
        );
        assert_eq!(
            [-2, -1, 4, 5].map(|p| at(Border::Reflect, p)),
            [Some(1), Some(0), Some(3), Some(2)]
        );
        assert_eq!(
            [-2, 5].map(|p| at(Border::Replicate, p)),
            [Some(0), Some(3)]
        );
        assert_eq!(at(Border::Constant(7), -1), None);
        assert_eq!(Border::Reflect101.index(-3, 1), Some(0));
    }

    #[test]
    fn gaussian_needs_odd_sizes() {
        let img = Image::new(4, 4, 1);
        let err = gaussian_blur(
            &img,
            (4, 3),
            0.0,
            0.0,
            Border::default(),
            &mut Image::new(0, 0, 1),
        );
        assert!(matches!(err, Err(FilterError::KernelSize { width: 4, .. })));
        assert_eq!(gaussian_kernel(3, 0.0), [0.25, 0.5, 0.25]);
    }
}
