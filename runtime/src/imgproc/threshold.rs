//! Fixed, Otsu and adaptive thresholds on u8 images, pixel-exact with OpenCV's `threshold`
//! and `adaptiveThreshold`.
//!
//! Exactness notes. A fixed threshold is floored and the maximum rounded half to even, as
//! OpenCV does for u8. Otsu's level repeats OpenCV's double-precision recurrence operation by
//! operation, so ties between levels break the same way. The adaptive mean is OpenCV's
//! `boxFilter` (replicated border): integer window sums scaled by `1 / n`, in f32 for the
//! columns its AVX2 loop covers and in f64 for the tail, which differ once `n` is large. The
//! adaptive Gaussian is OpenCV's f32 `GaussianBlur` (replicated border) on the image converted
//! to f32, then rounded: its kernel (`getGaussianKernel`, bit-exact variant) and the order of
//! its float operations, fused multiply-adds included, are reproduced, as measured against
//! OpenCV 5.0 on an AVX2 x86-64.

use thiserror::Error;

use super::Image;

/// Errors of the threshold functions.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ThresholdError {
    /// The image has several channels: threshold one channel (or a grey conversion).
    #[error("threshold needs a single-channel image, got {channels} channels")]
    NotSingleChannel { channels: usize },
    /// The adaptive block is even or 1: use an odd size of at least 3.
    #[error("adaptive threshold block size must be odd and at least 3, got {0}")]
    BlockSize(usize),
    /// Adaptive thresholds only binarise: use `Binary` or `BinaryInv`.
    #[error("adaptive threshold supports Binary and BinaryInv, got {0:?}")]
    AdaptiveType(ThresholdType),
}

/// What a threshold writes (OpenCV's `ThresholdTypes`), for `t` the threshold and `max` the
/// maximum value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThresholdType {
    /// `src > t ? max : 0`
    Binary,
    /// `src > t ? 0 : max`
    BinaryInv,
    /// `src > t ? t : src`
    Trunc,
    /// `src > t ? src : 0`
    ToZero,
    /// `src > t ? 0 : src`
    ToZeroInv,
}

/// How [`adaptive_threshold`] computes the local level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdaptiveMethod {
    /// Mean of the `block × block` neighbourhood (`ADAPTIVE_THRESH_MEAN_C`).
    Mean,
    /// Gaussian-weighted mean, sigma from the block size (`ADAPTIVE_THRESH_GAUSSIAN_C`).
    Gaussian,
}

fn check_channels(src: &Image) -> Result<(), ThresholdError> {
    match src.channels {
        1 => Ok(()),
        channels => Err(ThresholdError::NotSingleChannel { channels }),
    }
}

/// OpenCV's `saturate_cast<uchar>(double)`: round half to even, clamp.
fn saturate_u8(v: f64) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// OpenCV's `threshold(src, dst, thresh, maxval, kind)` on u8; returns the threshold used
/// (`thresh` floored). `dst` is resized to `src`'s size, reusing its allocation.
pub fn threshold(
    src: &Image,
    dst: &mut Image,
    thresh: f64,
    maxval: f64,
    kind: ThresholdType,
) -> Result<f64, ThresholdError> {
    check_channels(src)?;
    dst.reshape(src.width, src.height, 1);
    let t = thresh.floor().clamp(i32::MIN as f64, i32::MAX as f64) as i32;
    let max = if kind == ThresholdType::Trunc {
        t as f64
    } else {
        maxval.round_ties_even()
    };
    let max = max.clamp(0.0, 255.0) as u8;
    use ThresholdType::*;
    if !(0..255).contains(&t) {
        // Every pixel is on the same side of the threshold.
        let above = t < 0;
        let value = match kind {
            Binary => Some(if above { max } else { 0 }),
            BinaryInv => Some(if above { 0 } else { max }),
            Trunc | ToZeroInv if above => Some(0),
            ToZero if !above => Some(0),
            _ => None,
        };
        match value {
            Some(v) => dst.data.fill(v),
            None => dst.data.copy_from_slice(&src.data),
        }
        return Ok(f64::from(t));
    }
    let t8 = t as u8;
    let f = |s: u8| -> u8 {
        let above = s > t8;
        match kind {
            Binary => {
                if above {
                    max
                } else {
                    0
                }
            }
            BinaryInv => {
                if above {
                    0
                } else {
                    max
                }
            }
            Trunc => {
                if above {
                    t8
                } else {
                    s
                }
            }
            ToZero => {
                if above {
                    s
                } else {
                    0
                }
            }
            ToZeroInv => {
                if above {
                    0
                } else {
                    s
                }
            }
        }
    };
    let table: [u8; 256] = std::array::from_fn(|s| f(s as u8));
    dst.data
        .iter_mut()
        .zip(&src.data)
        .for_each(|(d, &s)| *d = table[usize::from(s)]);
    Ok(f64::from(t))
}

/// Otsu's level for `src`, computed as OpenCV's `getThreshVal_Otsu_8u` (0 for a flat image).
pub fn otsu_threshold(src: &Image) -> Result<u8, ThresholdError> {
    check_channels(src)?;
    let mut hist = [0u64; 256];
    src.data.iter().for_each(|&p| hist[usize::from(p)] += 1);
    let scale = 1.0 / src.data.len() as f64;
    let mu = hist
        .iter()
        .enumerate()
        .fold(0.0, |acc, (i, &h)| acc + i as f64 * h as f64)
        * scale;
    let eps = f64::from(f32::EPSILON);
    let (mut mu1, mut q1) = (0.0f64, 0.0f64);
    let (mut max_sigma, mut level) = (0.0f64, 0u8);
    for (i, &h) in hist.iter().enumerate() {
        let p_i = h as f64 * scale;
        mu1 *= q1;
        q1 += p_i;
        let q2 = 1.0 - q1;
        if q1.min(q2) < eps || q1.max(q2) > 1.0 - eps {
            continue;
        }
        mu1 = (mu1 + i as f64 * p_i) / q1;
        let mu2 = (mu - q1 * mu1) / q2;
        let sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
        if sigma > max_sigma {
            max_sigma = sigma;
            level = i as u8;
        }
    }
    Ok(level)
}

/// OpenCV's `threshold` with `THRESH_OTSU`: [`threshold`] at [`otsu_threshold`]; returns it.
pub fn threshold_otsu(
    src: &Image,
    dst: &mut Image,
    maxval: f64,
    kind: ThresholdType,
) -> Result<f64, ThresholdError> {
    let level = otsu_threshold(src)?;
    threshold(src, dst, f64::from(level), maxval, kind)
}

/// OpenCV's `adaptiveThreshold(src, dst, max_value, method, kind, block_size, c)`: each pixel
/// is compared with its neighbourhood's (Gaussian-)mean minus `c`. `dst` is resized to `src`'s
/// size, reusing its allocation.
pub fn adaptive_threshold(
    src: &Image,
    dst: &mut Image,
    max_value: f64,
    method: AdaptiveMethod,
    kind: ThresholdType,
    block_size: usize,
    c: f64,
) -> Result<(), ThresholdError> {
    check_channels(src)?;
    if block_size.is_multiple_of(2) || block_size < 3 {
        return Err(ThresholdError::BlockSize(block_size));
    }
    let delta = match kind {
        ThresholdType::Binary => c.ceil(),
        ThresholdType::BinaryInv => c.floor(),
        other => return Err(ThresholdError::AdaptiveType(other)),
    };
    dst.reshape(src.width, src.height, 1);
    if max_value < 0.0 {
        dst.data.fill(0);
        return Ok(());
    }
    // The local mean goes to dst first, as in OpenCV, then is replaced by the decision.
    match method {
        AdaptiveMethod::Mean => box_mean(src, block_size, dst),
        AdaptiveMethod::Gaussian => gaussian_mean(src, block_size, dst),
    }
    let max = saturate_u8(max_value);
    let delta = delta.clamp(-512.0, 512.0) as i32;
    let binary = kind == ThresholdType::Binary;
    for (d, &s) in dst.data.iter_mut().zip(&src.data) {
        let above = i32::from(s) - i32::from(*d) > -delta;
        *d = if above == binary { max } else { 0 };
    }
    Ok(())
}

/// Columns of one row that OpenCV's AVX2 box-filter loop scales in f32 (16 per vector).
fn f32_columns(width: usize) -> usize {
    width / 16 * 16
}

/// OpenCV's filters shrink the kernel to one tap along a side of length 1 (with a replicated,
/// isolated border), which changes the float rounding: (columns, rows) of the kernel.
fn kernel_size(src: &Image, block: usize) -> (usize, usize) {
    let side = |len: usize| if len == 1 { 1 } else { block };
    (side(src.width), side(src.height))
}

/// OpenCV's normalised `boxFilter` with a replicated border into `dst` (same size as `src`).
fn box_mean(src: &Image, block: usize, dst: &mut Image) {
    let (w, h) = (src.width, src.height);
    if w == 0 || h == 0 {
        return;
    }
    let (kw, kh) = kernel_size(src, block);
    let (rx, ry) = ((kw / 2) as isize, (kh / 2) as isize);
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    let n = (kw * kh) as f64;
    let (scale64, scale32) = (1.0 / n, (1.0 / n) as f32);
    let vector = f32_columns(w);
    let mut cols: Vec<u64> = vec![0; w];
    for dy in -ry..=ry {
        for (c, &p) in cols.iter_mut().zip(src.row(clamp(dy, h))) {
            *c += u64::from(p);
        }
    }
    for y in 0..h {
        let mut sum: u64 = (-rx..=rx).map(|dx| cols[clamp(dx, w)]).sum();
        for (x, d) in dst.row_mut(y).iter_mut().enumerate() {
            *d = if x < vector {
                (sum as f32 * scale32).round_ties_even().clamp(0.0, 255.0) as u8
            } else {
                saturate_u8(sum as f64 * scale64)
            };
            sum = sum + cols[clamp(x as isize + rx + 1, w)] - cols[clamp(x as isize - rx, w)];
        }
        let (enter, leave) = (clamp(y as isize + ry + 1, h), clamp(y as isize - ry, h));
        for ((c, &a), &b) in cols.iter_mut().zip(src.row(enter)).zip(src.row(leave)) {
            *c = *c + u64::from(a) - u64::from(b);
        }
    }
}

/// OpenCV's `getGaussianKernel(n, 0, CV_32F)`: fixed dyadic kernels up to 9 taps, otherwise
/// sampled with sigma = 0.15 n + 0.35 and normalised in double precision.
///
/// Kept local to adaptive thresholds; `imgproc::filter` will own the Gaussian kernel once merged.
fn gaussian_kernel(n: usize) -> Vec<f32> {
    let fixed: &[f64] = match n {
        1 => &[1.0],
        3 => &[0.25, 0.5, 0.25],
        5 => &[0.0625, 0.25, 0.375, 0.25, 0.0625],
        7 => &[
            0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125,
        ],
        9 => &[4.0, 13.0, 30.0, 51.0, 60.0, 51.0, 30.0, 13.0, 4.0].map(|v: f64| v / 256.0),
        _ => &[],
    };
    if !fixed.is_empty() {
        return fixed.iter().map(|&v| v as f32).collect();
    }
    let sigma = (n as f64).mul_add(0.15, 0.35);
    let scale = -0.125 / (sigma * sigma);
    let half = (n - 1) / 2;
    // x = 2 (i - (n - 1) / 2), hence the -0.5 * 0.25 above.
    let values: Vec<f64> = (0..half)
        .map(|i| (((1 - n as i64 + 2 * i as i64).pow(2)) as f64 * scale).exp())
        .collect();
    let sum = values.iter().fold(0.0, |acc, v| acc + v) * 2.0 + 1.0;
    let mul = 1.0 / sum;
    let side: Vec<f32> = values.iter().map(|v| (v * mul) as f32).collect();
    side.iter()
        .chain([&(mul as f32)])
        .chain(side.iter().rev())
        .copied()
        .collect()
}

/// OpenCV's f32 `GaussianBlur` (replicated border) of `src`, rounded into `dst`.
fn gaussian_mean(src: &Image, block: usize, dst: &mut Image) {
    gaussian_blur(src, block, |y, row| {
        for (d, &v) in dst.row_mut(y).iter_mut().zip(row) {
            *d = v.round_ties_even().clamp(0.0, 255.0) as u8;
        }
    });
}

/// OpenCV's f32 `GaussianBlur` with a replicated border of `src` converted to f32: calls
/// `emit(y, row)` for every row, top to bottom.
///
/// OpenCV runs a row filter then a symmetric column filter. Its row filter uses fused
/// multiply-adds on the columns of its vector loop (multiples of 4) and, on the tail columns,
/// plain multiply-adds except for the last `(n - 1) % 4` taps; its column filter fuses on the
/// columns of its 8-wide loop only.
fn gaussian_blur(src: &Image, block: usize, mut emit: impl FnMut(usize, &[f32])) {
    let (w, h) = (src.width, src.height);
    if w == 0 || h == 0 {
        return;
    }
    let (kw, kh) = kernel_size(src, block);
    let (kx, ky) = (gaussian_kernel(kw), gaussian_kernel(kh));
    let (rx, ry) = (kw / 2, kh / 2);
    let clamp = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
    let (row_vector, col_vector) = (w / 4 * 4, w / 8 * 8);
    let plain_taps = (kw - 1) - (kw - 1) % 4;
    // Row-filtered rows, in a ring indexed by source row.
    let mut ring = vec![0f32; kh * w];
    let mut line = vec![0f32; w];
    let filter_row = |y: usize, out: &mut [f32]| {
        let row = src.row(y);
        let px =
            |x: usize, j: usize| f32::from(row[clamp(x as isize + j as isize - rx as isize, w)]);
        for (x, o) in out.iter_mut().enumerate() {
            let mut acc = px(x, 0) * kx[0];
            for (j, &kj) in kx.iter().enumerate().skip(1) {
                acc = if x < row_vector || j > plain_taps {
                    px(x, j).mul_add(kj, acc)
                } else {
                    acc + px(x, j) * kj
                };
            }
            *o = acc;
        }
    };
    let mut next = 0;
    for y in 0..h {
        while next <= (y + ry).min(h - 1) {
            filter_row(next, &mut ring[(next % kh) * w..][..w]);
            next += 1;
        }
        let at = |d: isize, x: usize| ring[clamp(y as isize + d, h) % kh * w + x];
        for (x, out) in line.iter_mut().enumerate() {
            let mut acc = at(0, x) * ky[ry];
            for d in 1..=ry {
                let pair = at(d as isize, x) + at(-(d as isize), x);
                acc = if x < col_vector {
                    pair.mul_add(ky[ry + d], acc)
                } else {
                    acc + pair * ky[ry + d]
                };
            }
            *out = acc;
        }
        emit(y, &line);
    }
}

#[cfg(test)]
mod tests {
    //! The two stages whose float details matter, against OpenCV's own outputs (fixtures of
    //! tests/reference/opencv_morph.py): thresholded results alone rarely expose them.

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures/morph");

    struct Cases {
        manifest: serde_json::Value,
        data: Vec<u8>,
    }

    impl Cases {
        fn load() -> Self {
            let read = |name: &str| {
                std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| {
                    panic!(
                        "{FIXTURES}/{name}: {e}. Generate the fixtures with \
                         `python3 tests/reference/opencv_morph.py target/fixtures`"
                    )
                })
            };
            let manifest = serde_json::from_slice(&read("manifest.json")).expect("manifest.json");
            Self {
                manifest,
                data: read("data.bin"),
            }
        }

        /// (input image, block, offset of OpenCV's output) of every case in `section`.
        fn cases(&self, section: &str) -> Vec<(Image, usize, usize)> {
            let field = |v: &serde_json::Value, k: &str| v[k].as_u64().expect(k) as usize;
            let cases = self.manifest[section].as_array().expect(section);
            assert!(!cases.is_empty(), "no {section} fixtures");
            cases
                .iter()
                .map(|c| {
                    let input = &self.manifest["inputs"][field(c, "input")];
                    let (w, h, at) = (
                        field(input, "width"),
                        field(input, "height"),
                        field(input, "offset"),
                    );
                    let img = Image::from_vec(w, h, 1, self.data[at..at + w * h].to_vec()).unwrap();
                    (img, field(c, "block"), field(c, "offset"))
                })
                .collect()
        }
    }

    #[test]
    fn gaussian_blur_is_bit_exact() {
        let fixtures = Cases::load();
        for (src, block, offset) in fixtures.cases("gaussian_blur") {
            let expected = &fixtures.data[offset..offset + 4 * src.width * src.height];
            gaussian_blur(&src, block, |y, row| {
                for (x, v) in row.iter().enumerate() {
                    let at = 4 * (y * src.width + x);
                    let want = f32::from_le_bytes(expected[at..at + 4].try_into().unwrap());
                    assert_eq!(
                        v.to_bits(),
                        want.to_bits(),
                        "{}x{} block {block} at ({x}, {y}): {v} vs OpenCV {want}",
                        src.width,
                        src.height
                    );
                }
            });
        }
    }

    #[test]
    fn box_mean_is_exact() {
        let fixtures = Cases::load();
        let mut got = Image::new(0, 0, 1);
        for (src, block, offset) in fixtures.cases("box_mean") {
            got.reshape(src.width, src.height, 1);
            box_mean(&src, block, &mut got);
            let expected = &fixtures.data[offset..offset + src.width * src.height];
            let diff = (0..expected.len()).find(|&i| got.data[i] != expected[i]);
            assert_eq!(diff, None, "{}x{} block {block}", src.width, src.height);
        }
    }
}
