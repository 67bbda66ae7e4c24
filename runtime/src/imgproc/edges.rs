//! Image derivatives (Sobel, Scharr) and Canny edges, integer-exact with OpenCV on `u8` input.

use super::Image;
use super::filter::{Border, Window, hconv, separable, simd_fn, vconv};
use thiserror::Error;

/// Why an edge operation was refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum EdgeError {
    /// The source image has no pixels: check the frame was captured.
    #[error("empty source image: {width}x{height}")]
    Empty { width: usize, height: usize },
    /// The aperture is not supported: Sobel takes 1, 3, 5 or 7 (and more than the derivative
    /// order), Canny 3, 5 or 7.
    #[error("unsupported aperture {ksize} for derivative order ({dx}, {dy})")]
    Aperture { ksize: usize, dx: usize, dy: usize },
    /// A derivative needs an order of at least one in x or y (Scharr: exactly one, in one axis).
    #[error("unsupported derivative order ({dx}, {dy})")]
    Order { dx: usize, dy: usize },
}

fn check_source(src: &Image) -> Result<(), EdgeError> {
    if src.width == 0 || src.height == 0 {
        return Err(EdgeError::Empty {
            width: src.width,
            height: src.height,
        });
    }
    Ok(())
}

/// One axis of `getSobelKernels`: `ksize` integer taps of derivative `order` (smoothing for 0).
fn sobel_kernel(order: usize, ksize: usize) -> Vec<i32> {
    match (ksize, order) {
        (1, _) => vec![1],
        (3, 0) => vec![1, 2, 1],
        (3, 1) => vec![-1, 0, 1],
        (3, _) => vec![1, -2, 1],
        _ => {
            // Binomial smoothing convolved with `order` differences.
            let mut k = vec![0i32; ksize + 1];
            k[0] = 1;
            for _ in 0..ksize - order - 1 {
                for j in (1..=ksize).rev() {
                    k[j] += k[j - 1];
                }
            }
            for _ in 0..order {
                for j in (1..=ksize).rev() {
                    k[j] -= k[j - 1];
                }
                k.iter_mut().for_each(|v| *v = -*v);
            }
            k.truncate(ksize);
            k
        }
    }
}

/// Applies the separable integer kernels `kx`, `ky`, divides by `divisor` (rounding half to
/// even, as OpenCV's float path for a scaled `Sobel` does; exact here) and saturates to `i16`
/// (`sepFilter2D` into `CV_16S`).
fn derivative(
    src: &Image,
    kx: &[i32],
    ky: &[i32],
    divisor: f32,
    border: Border,
    dst: &mut Image<i16>,
) {
    let cn = src.channels;
    let width = src.width * cn;
    dst.reshape(src.width, src.height, cn);
    let out = &mut dst.data;
    let gain = |k: &[i32]| k.iter().map(|v| v.abs()).sum::<i32>();
    if divisor == 1.0 && 255 * gain(kx) * gain(ky) <= i32::from(i16::MAX) {
        // Every partial sum fits 16 bits (apertures up to 5): twice the lanes of `i32`.
        let narrow = |k: &[i32]| k.iter().map(|&v| v as i16).collect::<Vec<_>>();
        let mut acc16 = Vec::new();
        let (kx, ky) = (narrow(kx), narrow(ky));
        separable(
            src,
            kx.len(),
            ky.len(),
            border,
            |row, h: &mut [i16]| row_u8_i16(row, &kx, cn, h),
            |y, rows| vrow_i16(rows, &ky, &mut acc16, &mut out[y * width..][..width]),
        );
        return;
    }
    let mut acc = Vec::new();
    separable(
        src,
        kx.len(),
        ky.len(),
        border,
        |row, h: &mut [i32]| row_u8_i32(row, kx, cn, h),
        |y, rows| vrow_i32(rows, ky, &mut acc, divisor, &mut out[y * width..][..width]),
    );
}

simd_fn! {
    fn row_u8_i16(row: &[u8], k: &[i16], cn: usize, out: &mut [i16]) {
        hconv(row, k, cn, out)
    }
}

simd_fn! {
    fn vrow_i16(rows: Window<'_, i16>, k: &[i16], acc: &mut Vec<i16>, out: &mut [i16]) {
        vconv(rows, k, acc, out, |a| a)
    }
}

simd_fn! {
    fn row_u8_i32(row: &[u8], k: &[i32], cn: usize, out: &mut [i32]) {
        hconv(row, k, cn, out)
    }
}

simd_fn! {
    fn vrow_i32(rows: Window<'_, i32>, k: &[i32], acc: &mut Vec<i32>, divisor: f32, out: &mut [i16]) {
        vconv(rows, k, acc, out, |a| {
            let a = if divisor == 1.0 {
                a
            } else {
                (a as f32 / divisor).round_ties_even() as i32
            };
            a.clamp(i16::MIN.into(), i16::MAX.into()) as i16
        })
    }
}

/// Sobel derivative of order (`dx`, `dy`) with a `ksize` aperture (1, 3, 5, 7; 1 means a 3-tap
/// difference without smoothing), as `cv::Sobel(src, dst, CV_16S, dx, dy, ksize)`.
pub fn sobel(
    src: &Image,
    dx: usize,
    dy: usize,
    ksize: usize,
    border: Border,
    dst: &mut Image<i16>,
) -> Result<(), EdgeError> {
    check_source(src)?;
    if dx + dy == 0 {
        return Err(EdgeError::Order { dx, dy });
    }
    let size = |order: usize| if ksize == 1 && order > 0 { 3 } else { ksize };
    if ![1, 3, 5, 7].contains(&ksize) || size(dx) <= dx || size(dy) <= dy {
        return Err(EdgeError::Aperture { ksize, dx, dy });
    }
    derivative(
        src,
        &sobel_kernel(dx, size(dx)),
        &sobel_kernel(dy, size(dy)),
        1.0,
        border,
        dst,
    );
    Ok(())
}

/// Scharr first derivative in x (`dx = 1, dy = 0`) or y, as `cv::Scharr(src, dst, CV_16S, dx, dy)`.
pub fn scharr(
    src: &Image,
    dx: usize,
    dy: usize,
    border: Border,
    dst: &mut Image<i16>,
) -> Result<(), EdgeError> {
    check_source(src)?;
    let kernel = |order: usize| {
        if order == 1 {
            vec![-1, 0, 1]
        } else {
            vec![3, 10, 3]
        }
    };
    if dx + dy != 1 {
        return Err(EdgeError::Order { dx, dy });
    }
    derivative(src, &kernel(dx), &kernel(dy), 1.0, border, dst);
    Ok(())
}

/// `|dx| + |dy|` (L1) or `dx² + dy²` (L2), in `int` with OpenCV's wrap-around (saturated
/// 7-tap derivatives can reach 2^31).
#[inline(always)]
fn magnitude(x: i16, y: i16, l2: bool) -> i32 {
    let (x, y) = (i32::from(x), i32::from(y));
    if l2 {
        (x * x).wrapping_add(y * y)
    } else {
        x.abs() + y.abs()
    }
}

simd_fn! {
    fn magnitude_row(dx: &[i16], dy: &[i16], l2: bool, mag: &mut [i32]) {
        for ((m, &x), &y) in mag.iter_mut().zip(dx).zip(dy) {
            *m = magnitude(x, y, l2);
        }
    }
}

/// For colour images: per pixel, the channel with the largest magnitude, with its derivatives.
fn strongest_channel(
    (dx, dy): (&[i16], &[i16]),
    cn: usize,
    l2: bool,
    mag: &mut [i32],
    (gx, gy): (&mut [i16], &mut [i16]),
) {
    for (j, ((mg, ox), oy)) in mag
        .iter_mut()
        .zip(gx.iter_mut())
        .zip(gy.iter_mut())
        .enumerate()
    {
        let mut best = j * cn;
        let mut bm = magnitude(dx[best], dy[best], l2);
        for k in j * cn + 1..(j + 1) * cn {
            let v = magnitude(dx[k], dy[k], l2);
            if v > bm {
                (best, bm) = (k, v);
            }
        }
        (*mg, *ox, *oy) = (bm, dx[best], dy[best]);
    }
}

simd_fn! {
    /// Non-maximum suppression of one row (magnitude rows framed by a zero column on each side):
    /// a pixel above `low` that beats both neighbours across the edge becomes 2 (edge) when above
    /// `high`, else 0 (weak candidate); every other pixel becomes 1. The gradient direction is
    /// quantised with tan 22.5° in 15-bit fixed point, as OpenCV does. Branch-free, so it
    /// vectorises.
    fn suppress_row(mags: [&[i32]; 3], grads: (&[i16], &[i16]), thresholds: (i32, i32), out: &mut [u8]) {
        let ([prev, cur, next], (gx, gy), (low, high)) = (mags, grads, thresholds);
        let w = out.len();
        let (prev, cur, next, gx, gy) = (&prev[..w + 2], &cur[..w + 2], &next[..w + 2], &gx[..w], &gy[..w]);
        // `pick(c, a, b)` is `if c { a } else { b }` as bit masks: LLVM would turn a select of
        // loads into a load from a selected address, which does not vectorise.
        let pick = |c: bool, a: i32, b: i32| b ^ ((a ^ b) & -i32::from(c));
        for j in 0..w {
            let m = cur[j + 1];
            let (left, right, up, down) = (cur[j], cur[j + 2], prev[j + 1], next[j + 1]);
            let (up_left, up_right, down_left, down_right) = (prev[j], prev[j + 2], next[j], next[j + 2]);
            let (xs, ys) = (i32::from(gx[j]), i32::from(gy[j]));
            let (x, y) = (xs.abs(), ys.abs() << 15);
            let tg22x = x * 13573;
            let horizontal = y < tg22x;
            let vertical = y > tg22x.wrapping_add(x << 16);
            // Diagonal neighbours: up-left/down-right when dx and dy share a sign.
            let same_sign = (xs ^ ys) >= 0;
            let a = pick(horizontal, left, pick(vertical, up, pick(same_sign, up_left, up_right)));
            let b = pick(horizontal, right, pick(vertical, down, pick(same_sign, down_right, down_left)));
            let beats_b = pick(horizontal | vertical, i32::from(m >= b), i32::from(m > b)) != 0;
            let keep = (m > low) & (m > a) & beats_b;
            out[j] = pick(keep, pick(m > high, 2, 0), 1) as u8;
        }
    }
}

/// Canny edges (`cv::Canny(src, edges, low, high, aperture, l2)`): Sobel derivatives with a
/// replicated border, non-maximum suppression along the gradient direction (quantised with
/// tan 22.5° in 15-bit fixed point) and hysteresis over 8-connected neighbours. `dst` becomes a
/// one-channel mask of 0 and 255.
pub fn canny(
    src: &Image,
    low: f64,
    high: f64,
    aperture: usize,
    l2: bool,
    dst: &mut Image,
) -> Result<(), EdgeError> {
    check_source(src)?;
    if ![3, 5, 7].contains(&aperture) {
        return Err(EdgeError::Aperture {
            ksize: aperture,
            dx: 1,
            dy: 1,
        });
    }
    let (mut low, mut high) = (low, high);
    // 7-tap derivatives overflow 16 bits: OpenCV divides them and the thresholds by 16.
    let divisor = if aperture == 7 {
        (low, high) = (low / 16.0, high / 16.0);
        16.0
    } else {
        1.0
    };
    if low > high {
        std::mem::swap(&mut low, &mut high);
    }
    if l2 {
        let sq = |t: f64| {
            let t = t.min(32767.0);
            if t > 0.0 { t * t } else { t }
        };
        (low, high) = (sq(low), sq(high));
    }
    let (low, high) = (low.floor() as i64, high.floor() as i64);

    let (w, h, cn) = (src.width, src.height, src.channels);
    let mut dxi = Image::<i16>::new(0, 0, 1);
    let mut dyi = Image::<i16>::new(0, 0, 1);
    let (smooth, diff) = (sobel_kernel(0, aperture), sobel_kernel(1, aperture));
    derivative(src, &diff, &smooth, divisor, Border::Replicate, &mut dxi);
    derivative(src, &smooth, &diff, divisor, Border::Replicate, &mut dyi);

    // Map with a one-pixel frame: 0 = weak candidate, 1 = not an edge, 2 = edge.
    let stride = w + 2;
    let mut map = vec![1u8; stride * (h + 2)];
    let mut stack: Vec<usize> = Vec::new();
    // Magnitude rows (previous, current, next) with a zero column on each side, and for colour
    // images the derivatives of the strongest channel of the current and next rows.
    let mut mags = [vec![0i32; w + 2], vec![0i32; w + 2], vec![0i32; w + 2]];
    let mut grads = [
        [vec![0i16; w], vec![0i16; w]],
        [vec![0i16; w], vec![0i16; w]],
    ];
    let low = low.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
    let high = high.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
    for i in 0..=h {
        mags.rotate_left(1);
        grads.swap(0, 1);
        let next = &mut mags[2][1..=w];
        if i == h {
            next.fill(0);
        } else if cn == 1 {
            magnitude_row(dxi.row(i), dyi.row(i), l2, next);
        } else {
            let [gx, gy] = &mut grads[1];
            strongest_channel((dxi.row(i), dyi.row(i)), cn, l2, next, (gx, gy));
        }
        if i == 0 {
            continue;
        }
        // Row i - 1 now has both neighbours.
        let [prev, cur, next] = &mags;
        let (gx, gy) = if cn == 1 {
            (dxi.row(i - 1), dyi.row(i - 1))
        } else {
            (grads[0][0].as_slice(), grads[0][1].as_slice())
        };
        let map_row = &mut map[i * stride + 1..][..w];
        suppress_row([prev, cur, next], (gx, gy), (low, high), map_row);
        for (j, &v) in map_row.iter().enumerate() {
            if v == 2 {
                stack.push(i * stride + 1 + j);
            }
        }
    }
    // Hysteresis: grow edges into 8-connected weak candidates.
    let neighbours = [
        -(stride as isize) - 1,
        -(stride as isize),
        -(stride as isize) + 1,
        -1,
        1,
        stride as isize - 1,
        stride as isize,
        stride as isize + 1,
    ];
    while let Some(p) = stack.pop() {
        for d in neighbours {
            let q = (p as isize + d) as usize;
            if map[q] == 0 {
                map[q] = 2;
                stack.push(q);
            }
        }
    }
    dst.reshape(w, h, 1);
    for (y, out) in dst.data.chunks_exact_mut(w).enumerate() {
        for (o, &m) in out.iter_mut().zip(&map[(y + 1) * stride + 1..]) {
            *o = if m == 2 { 255 } else { 0 };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sobel_kernels_match_opencv() {
        assert_eq!(sobel_kernel(1, 5), [-1, -2, 0, 2, 1]);
        assert_eq!(sobel_kernel(2, 5), [1, 0, -2, 0, 1]);
        assert_eq!(sobel_kernel(0, 7), [1, 6, 15, 20, 15, 6, 1]);
        assert_eq!(sobel_kernel(1, 7), [-1, -4, -5, 0, 5, 4, 1]);
    }

    #[test]
    fn bad_orders_and_apertures_are_errors() {
        let img = Image::new(4, 4, 1);
        let mut d16 = Image::<i16>::new(0, 0, 1);
        assert_eq!(
            sobel(&img, 0, 0, 3, Border::default(), &mut d16),
            Err(EdgeError::Order { dx: 0, dy: 0 })
        );
        assert!(matches!(
            sobel(&img, 3, 0, 3, Border::default(), &mut d16),
            Err(EdgeError::Aperture { ksize: 3, .. })
        ));
        assert!(matches!(
            canny(&img, 1.0, 2.0, 4, false, &mut Image::new(0, 0, 1)),
            Err(EdgeError::Aperture { ksize: 4, .. })
        ));
    }
}
