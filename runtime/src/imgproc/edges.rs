//! Image derivatives (Sobel, Scharr) and Canny edges, integer-exact with OpenCV on `u8` input.

use super::Image;
use super::filter::{Border, hconv, separable};
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
    let mut acc = vec![0i32; width];
    separable(
        src,
        kx.len(),
        ky.len(),
        border,
        |row, h: &mut [i32]| hconv(row, kx, cn, h),
        |y, rows| {
            acc.fill(0);
            for (r, &k) in rows.iter().zip(ky) {
                for (a, &h) in acc.iter_mut().zip(r.iter()) {
                    *a += h * k;
                }
            }
            for (d, &a) in out[y * width..(y + 1) * width].iter_mut().zip(&acc) {
                let a = if divisor == 1.0 {
                    a
                } else {
                    (a as f32 / divisor).round_ties_even() as i32
                };
                *d = a.clamp(i16::MIN.into(), i16::MAX.into()) as i16;
            }
        },
    );
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

/// Gradient magnitude per pixel from Sobel derivatives, keeping the channel with the largest
/// magnitude (and its derivatives) for colour images.
fn magnitude_row(
    dx: &[i16],
    dy: &[i16],
    cn: usize,
    l2: bool,
    mag: &mut [i32],
    gx: &mut [i16],
    gy: &mut [i16],
) {
    // OpenCV sums in `int` with wrap-around (saturated 7-tap derivatives can reach 2^31).
    let m = |x: i16, y: i16| {
        let (x, y) = (i32::from(x), i32::from(y));
        if l2 {
            (x * x).wrapping_add(y * y)
        } else {
            x.abs() + y.abs()
        }
    };
    for (j, ((mg, ox), oy)) in mag
        .iter_mut()
        .zip(gx.iter_mut())
        .zip(gy.iter_mut())
        .enumerate()
    {
        let mut best = j * cn;
        let mut bm = m(dx[best], dy[best]);
        for k in j * cn + 1..(j + 1) * cn {
            let v = m(dx[k], dy[k]);
            if v > bm {
                (best, bm) = (k, v);
            }
        }
        (*mg, *ox, *oy) = (bm, dx[best], dy[best]);
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
    // Magnitude rows (previous, current, next) with a zero column on each side.
    let mut mags = [vec![0i32; w + 2], vec![0i32; w + 2], vec![0i32; w + 2]];
    let mut grads = [
        (vec![0i16; w], vec![0i16; w]),
        (vec![0i16; w], vec![0i16; w]),
    ];
    for i in 0..=h {
        mags.rotate_left(1);
        grads.swap(0, 1);
        if i < h {
            let [.., next] = &mut mags;
            let (gx, gy) = &mut grads[1];
            magnitude_row(dxi.row(i), dyi.row(i), cn, l2, &mut next[1..=w], gx, gy);
        } else {
            mags[2].fill(0);
        }
        if i == 0 {
            continue;
        }
        // Row i - 1 now has both neighbours.
        let [prev, cur, next] = &mags;
        let (gx, gy) = &grads[0];
        let row = i * stride + 1;
        for j in 0..w {
            let m = cur[j + 1];
            if i64::from(m) <= low {
                continue;
            }
            let (xs, ys) = (gx[j], gy[j]);
            let x = i64::from(xs).abs();
            let y = i64::from(ys).abs() << 15;
            let tg22x = x * 13573;
            let c = j + 1;
            let is_max = if y < tg22x {
                m > cur[c - 1] && m >= cur[c + 1]
            } else if y > tg22x + (x << 16) {
                m > prev[c] && m >= next[c]
            } else {
                let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                m > prev[(c as isize - s) as usize] && m > next[(c as isize + s) as usize]
            };
            if is_max {
                if i64::from(m) > high {
                    map[row + j] = 2;
                    stack.push(row + j);
                } else {
                    map[row + j] = 0;
                }
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
