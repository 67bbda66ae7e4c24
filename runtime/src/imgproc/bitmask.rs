//! A bit-packed binary mask (one bit per pixel) and its morphology.
//!
//! Rows are stored as little-endian `u64` words, pixel `x` in bit `x % 64` of word `x / 64`,
//! each row padded to whole words with zero bits. Morphology runs the same engine as the u8
//! path ([`super::morph`]) with min/max replaced by AND/OR over whole words and horizontal
//! shifts done as funnel shifts across word boundaries, 64 pixels per operation (256 or 512
//! with AVX2/AVX-512). On binary images (0/255) its results equal the u8 path's, for every
//! operation, with [`Border::Neutral`], [`Border::Replicate`] and `Border::Constant(0 | 255)`;
//! other constants are read as set when nonzero.

use super::Image;
use super::morph::{
    Border, Extremum, Geometry, Lanes, MorphError, MorphOp, Morphology, Shifted, Simd,
    StructuringElement, run,
};

/// A binary mask, one bit per pixel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BitMask {
    width: usize,
    height: usize,
    words_per_row: usize,
    data: Vec<u64>,
}

impl BitMask {
    /// An all-clear mask.
    pub fn new(width: usize, height: usize) -> Self {
        let mut mask = Self::default();
        mask.reshape(width, height);
        mask
    }

    /// The mask of `src`'s nonzero pixels.
    pub fn from_image(src: &Image) -> Result<Self, MorphError> {
        let mut mask = Self::default();
        mask.load(src)?;
        Ok(mask)
    }

    /// Sets the mask to `src`'s nonzero pixels, reusing the allocation.
    pub fn load(&mut self, src: &Image) -> Result<(), MorphError> {
        if src.channels != 1 {
            return Err(MorphError::NotSingleChannel {
                channels: src.channels,
            });
        }
        self.reshape(src.width, src.height);
        if self.width == 0 {
            return Ok(());
        }
        for (words, px) in self
            .data
            .chunks_exact_mut(self.words_per_row)
            .zip(src.data.chunks_exact(src.width))
        {
            for (word, px) in words.iter_mut().zip(px.chunks(64)) {
                let mut chunks = px.chunks_exact(8);
                let mut bits = 0u64;
                for (i, c) in chunks.by_ref().enumerate() {
                    bits |= u64::from(pack8(u64::from_le_bytes(c.try_into().unwrap()))) << (8 * i);
                }
                let done = px.len() - chunks.remainder().len();
                for (i, &p) in chunks.remainder().iter().enumerate() {
                    bits |= u64::from(p != 0) << (done + i);
                }
                *word = bits;
            }
        }
        Ok(())
    }

    /// Writes the mask to `dst` as 0 / 255, reusing its allocation.
    pub fn store(&self, dst: &mut Image) {
        dst.reshape(self.width, self.height, 1);
        if self.width == 0 {
            return;
        }
        for (px, words) in dst
            .data
            .chunks_exact_mut(self.width)
            .zip(self.data.chunks_exact(self.words_per_row))
        {
            for (px, &word) in px.chunks_mut(64).zip(words) {
                let bytes = word.to_le_bytes();
                for (out, &b) in px.chunks_mut(8).zip(&bytes) {
                    out.copy_from_slice(&SPREAD[usize::from(b)].to_le_bytes()[..out.len()]);
                }
            }
        }
    }

    /// Resizes to `width × height`, reusing the allocation; the content is unspecified.
    pub fn reshape(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.words_per_row = width.div_ceil(64);
        self.data.resize(self.words_per_row * height, 0);
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// Row `y`'s words; bits past the width are zero.
    pub fn row(&self, y: usize) -> &[u64] {
        &self.data[y * self.words_per_row..][..self.words_per_row]
    }

    pub fn get(&self, x: usize, y: usize) -> bool {
        assert!(x < self.width, "x = {x} outside width {}", self.width);
        self.row(y)[x / 64] >> (x % 64) & 1 == 1
    }

    pub fn set(&mut self, x: usize, y: usize, value: bool) {
        assert!(x < self.width, "x = {x} outside width {}", self.width);
        let word = &mut self.data[y * self.words_per_row + x / 64];
        *word = (*word & !(1 << (x % 64))) | (u64::from(value) << (x % 64));
    }

    /// Number of set pixels.
    pub fn count(&self) -> usize {
        self.data.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Bit `i` set iff byte `i` of the little-endian `x` is nonzero.
fn pack8(x: u64) -> u8 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // High bit of each byte: set iff the byte is nonzero (no carry crosses bytes).
    let high = (((x & LOW7) + LOW7) | x) & !LOW7;
    // Gathers bit 8i + 7 into bit 56 + i, without collisions or carries.
    ((high >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Byte `i` of `SPREAD[b]` is 255 iff bit `i` of `b` is set.
const SPREAD: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if b >> i & 1 == 1 {
                table[b] |= 0xff << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    table
};

impl Morphology {
    /// [`Morphology::apply`] on a bit-packed mask; `dst` is resized to `src`'s size.
    pub fn apply_mask(&mut self, src: &BitMask, dst: &mut BitMask) {
        dst.reshape(src.width, src.height);
        let g = Geometry {
            width: src.width,
            height: src.height,
            stride: src.words_per_row,
        };
        run::<Bits>(&self.config, &mut self.words, &src.data, &mut dst.data, g);
    }
}

/// [`super::morph::morphology_ex`] on bit-packed masks.
pub fn morphology_ex(
    src: &BitMask,
    dst: &mut BitMask,
    op: MorphOp,
    kernel: &StructuringElement,
    anchor: Option<(usize, usize)>,
    iterations: usize,
    border: Border,
) -> Result<(), MorphError> {
    Morphology::new(op, kernel, anchor, iterations, border)?.apply_mask(src, dst);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bit lanes.

pub(crate) struct Bits;

/// What a funnel kernel does with the shifted word `v`.
const COPY: u8 = 0;
const AND: u8 = 1;
const OR: u8 = 2;

fn op_of(m: Extremum) -> u8 {
    match m {
        Extremum::Min => AND,
        Extremum::Max => OR,
    }
}

impl Lanes for Bits {
    type Unit = u64;
    const PX: usize = 64;

    fn splat(value: u8) -> u64 {
        if value != 0 { !0 } else { 0 }
    }

    fn pixel(row: &[u64], x: usize) -> u64 {
        0u64.wrapping_sub(row[x / 64] >> (x % 64) & 1)
    }

    fn combine(simd: Simd, m: Extremum, dst: &mut [u64], a: &[u64], b: Shifted<u64>, w: usize) {
        funnel(simd, op_of(m), dst, Some(a), b, w);
    }

    fn accumulate(simd: Simd, m: Extremum, dst: &mut [u64], b: Shifted<u64>, w: usize) {
        funnel(simd, op_of(m), dst, None, b, w);
    }

    fn shift(simd: Simd, dst: &mut [u64], b: Shifted<u64>, w: usize) {
        funnel(simd, COPY, dst, None, b, w);
    }

    fn trim(image: &mut [u64], g: Geometry) {
        if !g.width.is_multiple_of(64) {
            let keep = (1u64 << (g.width % 64)) - 1;
            for row in image.chunks_exact_mut(g.stride) {
                row[g.stride - 1] &= keep;
            }
        }
    }

    fn difference(dst: &mut [u64], a: &[u64]) {
        dst.iter_mut().zip(a).for_each(|(d, &a)| *d &= !a);
    }

    fn difference_from(dst: &mut [u64], a: &[u64]) {
        dst.iter_mut().zip(a).for_each(|(d, &a)| *d = a & !*d);
    }

    fn intersect(dst: &mut [u64], a: &[u64]) {
        dst.iter_mut().zip(a).for_each(|(d, &a)| *d &= a);
    }

    fn complement(dst: &mut [u64], a: &[u64]) {
        dst.iter_mut().zip(a).for_each(|(d, &a)| *d = !a);
    }
}

/// `dst[k] = op(a[k], B[k])` over the `w.div_ceil(64)` words of the output, where `B` is `b`
/// read `b.shift` pixels further: word `k` of `B` joins source words `k + q` and `k + q + 1`
/// (`shift = 64 q + r`). `a` is `dst` itself when `None`.
fn funnel(simd: Simd, op: u8, dst: &mut [u64], a: Option<&[u64]>, b: Shifted<u64>, w: usize) {
    let n = w.div_ceil(64);
    let (q, r) = (b.shift.div_euclid(64), b.shift.rem_euclid(64) as u32);
    let nb = b.width.div_ceil(64) as isize;
    // Source words that need no completion with the fill.
    let clean = if b.width.is_multiple_of(64) {
        nb
    } else {
        nb - 1
    };
    let word = |i: isize| -> u64 {
        if (0..clean).contains(&i) {
            b.row[i as usize]
        } else if i < nb && i >= 0 {
            let keep = (1u64 << (b.width % 64)) - 1;
            (b.row[i as usize] & keep) | (b.fill & !keep)
        } else {
            b.fill
        }
    };
    let shifted = |k: usize| {
        let i = k as isize + q;
        if r == 0 {
            word(i)
        } else {
            (word(i) >> r) | (word(i + 1) << (64 - r))
        }
    };
    // Words whose sources are all clean go to the kernel; the few others are done here.
    let lo = (-q).clamp(0, n as isize) as usize;
    let hi = (clean - q - isize::from(r != 0)).clamp(lo as isize, n as isize) as usize;
    for k in (0..lo).chain(hi..n) {
        let v = shifted(k);
        let x = a.map_or(dst[k], |a| a[k]);
        dst[k] = match op {
            COPY => v,
            AND => x & v,
            _ => x | v,
        };
    }
    if lo < hi {
        let d = dst[lo..hi].as_mut_ptr();
        let x = a.map_or(d.cast_const(), |a| a[lo..hi].as_ptr());
        let from = (lo as isize + q) as usize;
        let src = &b.row[from..from + (hi - lo) + usize::from(r != 0)];
        match op {
            COPY => kernels::funnel::<COPY>(simd, d, x, src.as_ptr(), r, hi - lo),
            AND => kernels::funnel::<AND>(simd, d, x, src.as_ptr(), r, hi - lo),
            _ => kernels::funnel::<OR>(simd, d, x, src.as_ptr(), r, hi - lo),
        }
    }
}

/// `dst[k] = op(a[k], v)` with `v = b[k] >> r | b[k + 1] << (64 - r)` (`v = b[k]` when `r == 0`)
/// over `n` words; `a` may be `dst` itself.
mod kernels {
    use super::{AND, COPY, Simd};

    pub(super) fn funnel<const OP: u8>(
        simd: Simd,
        dst: *mut u64,
        a: *const u64,
        b: *const u64,
        r: u32,
        n: usize,
    ) {
        // SAFETY: the caller passes `n` writable words at dst, `n` readable at a (or a == dst),
        // `n + (r != 0)` readable at b; `simd` went through `Simd::is_available`.
        unsafe {
            let done = match simd {
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => x86::avx512::<OP>(dst, a, b, r, n),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => x86::avx2::<OP>(dst, a, b, r, n),
                #[cfg(target_arch = "x86_64")]
                Simd::Sse2 => x86::sse2::<OP>(dst, a, b, r, n),
                #[cfg(target_arch = "aarch64")]
                Simd::Neon => arm::neon::<OP>(dst, a, b, r, n),
                _ => 0,
            };
            for k in done..n {
                let lo = *b.add(k);
                let v = if r == 0 {
                    lo
                } else {
                    (lo >> r) | (*b.add(k + 1) << (64 - r))
                };
                *dst.add(k) = match OP {
                    COPY => v,
                    AND => *a.add(k) & v,
                    _ => *a.add(k) | v,
                };
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::{AND, COPY};
        use std::arch::x86_64::*;

        /// One x86 kernel per vector width ($words u64 per vector); returns the words done.
        macro_rules! kernel {
            ($name:ident, $feature:literal, $words:literal, $load:ident, $store:ident,
             $srl:ident, $sll:ident, $and:ident, $or:ident) => {
                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn $name<const OP: u8>(
                    dst: *mut u64,
                    a: *const u64,
                    b: *const u64,
                    r: u32,
                    n: usize,
                ) -> usize {
                    let mut k = 0;
                    // SAFETY: the loop condition keeps every access within the words the
                    // caller guarantees (b + 1 is read only when r != 0).
                    unsafe {
                        let right = _mm_cvtsi32_si128(r as i32);
                        let left = _mm_cvtsi32_si128(64 - r as i32);
                        while k + $words <= n {
                            let lo = $load(b.add(k).cast());
                            let v = if r == 0 {
                                lo
                            } else {
                                $or($srl(lo, right), $sll($load(b.add(k + 1).cast()), left))
                            };
                            let v = match OP {
                                COPY => v,
                                AND => $and($load(a.add(k).cast()), v),
                                _ => $or($load(a.add(k).cast()), v),
                            };
                            $store(dst.add(k).cast(), v);
                            k += $words;
                        }
                    }
                    k
                }
            };
        }

        kernel!(
            sse2,
            "sse2",
            2,
            _mm_loadu_si128,
            _mm_storeu_si128,
            _mm_srl_epi64,
            _mm_sll_epi64,
            _mm_and_si128,
            _mm_or_si128
        );
        kernel!(
            avx2,
            "avx2",
            4,
            _mm256_loadu_si256,
            _mm256_storeu_si256,
            _mm256_srl_epi64,
            _mm256_sll_epi64,
            _mm256_and_si256,
            _mm256_or_si256
        );
        kernel!(
            avx512,
            "avx512f",
            8,
            _mm512_loadu_si512,
            _mm512_storeu_si512,
            _mm512_srl_epi64,
            _mm512_sll_epi64,
            _mm512_and_si512,
            _mm512_or_si512
        );
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use super::{AND, COPY};
        use std::arch::aarch64::*;

        #[target_feature(enable = "neon")]
        pub(in super::super) unsafe fn neon<const OP: u8>(
            dst: *mut u64,
            a: *const u64,
            b: *const u64,
            r: u32,
            n: usize,
        ) -> usize {
            let mut k = 0;
            // SAFETY: as for the x86 kernels; USHL by a negative count shifts right.
            unsafe {
                let (right, left) = (vdupq_n_s64(-i64::from(r)), vdupq_n_s64(64 - i64::from(r)));
                while k + 2 <= n {
                    let lo = vld1q_u64(b.add(k));
                    let v = if r == 0 {
                        lo
                    } else {
                        vorrq_u64(
                            vshlq_u64(lo, right),
                            vshlq_u64(vld1q_u64(b.add(k + 1)), left),
                        )
                    };
                    let v = match OP {
                        COPY => v,
                        AND => vandq_u64(vld1q_u64(a.add(k)), v),
                        _ => vorrq_u64(vld1q_u64(a.add(k)), v),
                    };
                    vst1q_u64(dst.add(k), v);
                    k += 2;
                }
            }
            k
        }
    }
}
