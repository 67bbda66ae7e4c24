//! A bit-packed binary mask (one bit per pixel) and its morphology.
//!
//! Rows are stored as little-endian `u64` words, pixel `x` in bit `x % 64` of word `x / 64`,
//! each row padded to whole words with zero bits. Morphology runs the engine of
//! [`super::morph`] with min/max replaced by AND/OR of whole words and horizontal shifts done
//! as funnel shifts across word boundaries (one `vpshrdvq` with AVX-512 VBMI2): 64 pixels
//! per operation, 256 with AVX2. On binary
//! images (0/255) its results equal the u8 path's, for every operation, with
//! [`Border::Neutral`], [`Border::Replicate`] and `Border::Constant(0 | 255)`; other constants
//! are read as set when nonzero.

use super::Image;
use super::morph::kernels::{self as morph_kernels, ByteOp};
use super::morph::{
    Border, Extremum, Geometry, Lanes, MAX_TERMS, MorphError, MorphOp, Morphology, Simd,
    StructuringElement, Term, run,
};

thread_local! {
    static NO_VBMI2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the AVX-512 kernels' VBMI2 funnel shifts turned off on this thread, so tests
/// can check the plain AVX-512 kernels on CPUs that have VBMI2.
#[doc(hidden)]
pub fn without_vbmi2<R>(f: impl FnOnce() -> R) -> R {
    let old = NO_VBMI2.replace(true);
    let r = f();
    NO_VBMI2.set(old);
    r
}

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

impl Lanes for Bits {
    type Unit = u64;
    const PX: usize = 64;
    const DIRECT: usize = 5;

    fn splat(value: u8) -> u64 {
        if value != 0 { !0 } else { 0 }
    }

    fn pixel(row: &[u64], x: usize) -> u64 {
        0u64.wrapping_sub(row[x / 64] >> (x % 64) & 1)
    }

    fn margin(reach: usize) -> usize {
        // A shifted word joins two source words: one more word of look-ahead.
        reach.div_ceil(64) + 1
    }

    fn fill_margins(row: &mut [u64], w: usize, margin: usize, left: u64, right: u64) {
        let n = w.div_ceil(64);
        row[..margin].fill(left);
        if !w.is_multiple_of(64) {
            let keep = (1u64 << (w % 64)) - 1;
            let last = &mut row[margin + n - 1];
            *last = (*last & keep) | (right & !keep);
        }
        row[margin + n..].fill(right);
    }

    fn vertical(
        simd: Simd,
        m: Extremum,
        dst: &mut [u64],
        dst_stride: usize,
        src: &[u64],
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
        // AND and OR are byte-wise: the u8 kernel runs on the words' bytes.
        let op = match m {
            Extremum::Min => ByteOp::And,
            Extremum::Max => ByteOp::Or,
        };
        let (dst, src) = (dst.as_mut_ptr().cast::<u8>(), src.as_ptr().cast::<u8>());
        // SAFETY: the rows were bounds-checked above; `simd` went through `is_available`.
        unsafe {
            morph_kernels::vertical(
                simd,
                op,
                dst,
                8 * dst_stride,
                src,
                8 * stride,
                rows,
                kh,
                8 * n,
            )
        };
    }

    fn gather(
        simd: Simd,
        m: Extremum,
        dst: &mut [u64],
        stride: usize,
        rows: usize,
        n: usize,
        terms: &[Term<u64>],
        acc: bool,
    ) {
        if rows == 0 || n == 0 {
            return;
        }
        // Packed rows (every stride == n): one run over the whole band. A shifted read past a
        // row's last word then reads the next row's first, as the row-by-row loop does.
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
        let mut srcs = [kernels::Source {
            ptr: std::ptr::null(),
            shift: 0,
            stride: 0,
        }; MAX_TERMS + 1];
        let first = usize::from(acc);
        if acc {
            srcs[0] = kernels::Source {
                ptr: d.cast_const(),
                shift: 0,
                stride,
            };
        }
        for (s, t) in srcs[first..].iter_mut().zip(terms) {
            let (q, shift) = (t.shift / 64, (t.shift % 64) as u32);
            let end = (rows - 1) * t.stride + q + n + usize::from(shift != 0);
            assert!(end <= t.data.len(), "term rows out of bounds");
            *s = kernels::Source {
                ptr: t.data[q..].as_ptr(),
                shift,
                stride: t.stride,
            };
        }
        let srcs = &srcs[..first + terms.len()];
        // SAFETY: every row of dst and of each term was bounds-checked above; a source equal to
        // dst (acc) has no shift; `simd` went through `Simd::is_available`.
        unsafe { kernels::gather(simd, m == Extremum::Max, d, stride, srcs, rows, n) };
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

/// `dst[r][k] = AND|OR over sources of (p[k] >> shift | p[k + 1] << (64 - shift))` for
/// `r < rows`, `k < n`, `p` the source's row `r` (`p[k]` alone when `shift == 0`); a source
/// may be `dst` itself, unshifted.
mod kernels {
    use super::{MAX_TERMS, Simd};

    #[derive(Clone, Copy)]
    pub(super) struct Source {
        pub ptr: *const u64,
        pub shift: u32,
        pub stride: usize,
    }

    /// Row pointers of the sources, moved down a row by [`next_row`].
    fn first_row(srcs: &[Source]) -> [*const u64; MAX_TERMS + 1] {
        let mut ptrs = [std::ptr::null(); MAX_TERMS + 1];
        for (p, s) in ptrs.iter_mut().zip(srcs) {
            *p = s.ptr;
        }
        ptrs
    }

    fn next_row(ptrs: &mut [*const u64; MAX_TERMS + 1], srcs: &[Source]) {
        for (p, s) in ptrs.iter_mut().zip(srcs) {
            *p = p.wrapping_add(s.stride);
        }
    }

    /// # Safety
    /// For every `r < rows`: `n` words writable at `dst + r * stride`, and readable at every
    /// source's row `r` plus one when its shift is not 0; `simd` available.
    pub(super) unsafe fn gather(
        simd: Simd,
        or: bool,
        dst: *mut u64,
        stride: usize,
        srcs: &[Source],
        rows: usize,
        n: usize,
    ) {
        // SAFETY: per the contract; AVX-512 implies AVX2, which implies SSE2, and each kernel
        // gets at least one vector of words per row. AVX-512 only from two vectors on: on
        // shorter rows its overlapping last vector redoes too much.
        #[cfg(target_arch = "x86_64")]
        let vbmi2 = simd == Simd::Avx512 && x86::has_vbmi2();
        let done = match (simd, or) {
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, false) if n >= 16 && vbmi2 => unsafe {
                x86::avx512_vbmi2::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, true) if n >= 16 && vbmi2 => unsafe {
                x86::avx512_vbmi2::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, false) if n >= 4 && vbmi2 => unsafe {
                x86::avx2_vbmi2::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, true) if n >= 4 && vbmi2 => unsafe {
                x86::avx2_vbmi2::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, false) if n >= 16 => unsafe {
                x86::avx512::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512, true) if n >= 16 => unsafe {
                x86::avx512::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, false) if n >= 4 => unsafe {
                x86::avx2::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2, true) if n >= 4 => unsafe {
                x86::avx2::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, false) if n >= 2 => unsafe {
                x86::sse2::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "x86_64")]
            (Simd::Avx512 | Simd::Avx2 | Simd::Sse2, true) if n >= 2 => unsafe {
                x86::sse2::<true>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, false) if n >= 2 => unsafe {
                arm::neon::<false>(dst, stride, srcs, rows, n)
            },
            #[cfg(target_arch = "aarch64")]
            (Simd::Neon, true) if n >= 2 => unsafe {
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
            for k in 0..n {
                let word = |(p, s): (*const u64, &Source)| {
                    // SAFETY: per the contract.
                    unsafe {
                        let lo = *p.add(k);
                        if s.shift == 0 {
                            lo
                        } else {
                            (lo >> s.shift) | (*p.add(k + 1) << (64 - s.shift))
                        }
                    }
                };
                let mut words = ptrs.iter().copied().zip(srcs).map(word);
                let first = words.next().expect("a source");
                let v = words.fold(first, |v, u| if or { v | u } else { v & u });
                // SAFETY: per the contract.
                unsafe { *d.add(k) = v };
            }
            next_row(&mut ptrs, srcs);
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use super::{Source, first_row, next_row};
        use std::arch::x86_64::*;

        /// Whether the CPU has AVX-512 VBMI2 funnel shifts (`vpshrdvq`), which join two
        /// words in one instruction instead of three.
        pub(in super::super) fn has_vbmi2() -> bool {
            !super::super::NO_VBMI2.get()
                && std::arch::is_x86_feature_detected!("avx512vbmi2")
                && std::arch::is_x86_feature_detected!("avx512vl")
        }

        /// Shift counts for [`srl_sll`]: right and left.
        #[target_feature(enable = "sse2")]
        fn counts_sll(shift: u32) -> (__m128i, __m128i) {
            (
                _mm_cvtsi32_si128(shift as i32),
                _mm_cvtsi32_si128(64 - shift as i32),
            )
        }

        macro_rules! funnel {
            ($name:ident, $feature:literal, $vec:ty, $srl:ident, $sll:ident, $or:ident) => {
                /// `lo >> right | hi << left` per word.
                #[target_feature(enable = $feature)]
                fn $name(lo: $vec, hi: $vec, (right, left): (__m128i, __m128i)) -> $vec {
                    $or($srl(lo, right), $sll(hi, left))
                }
            };
        }
        funnel!(
            srl_sll_128,
            "sse2",
            __m128i,
            _mm_srl_epi64,
            _mm_sll_epi64,
            _mm_or_si128
        );
        funnel!(
            srl_sll_256,
            "avx2",
            __m256i,
            _mm256_srl_epi64,
            _mm256_sll_epi64,
            _mm256_or_si256
        );
        funnel!(
            srl_sll_512,
            "avx512f",
            __m512i,
            _mm512_srl_epi64,
            _mm512_sll_epi64,
            _mm512_or_si512
        );

        #[target_feature(enable = "avx2")]
        fn counts_256(shift: u32) -> __m256i {
            _mm256_set1_epi64x(i64::from(shift))
        }

        #[target_feature(enable = "avx512f")]
        fn counts_512(shift: u32) -> __m512i {
            _mm512_set1_epi64(i64::from(shift))
        }

        #[target_feature(enable = "avx2,avx512vl,avx512vbmi2")]
        fn shrd_256(lo: __m256i, hi: __m256i, count: __m256i) -> __m256i {
            _mm256_shrdv_epi64(lo, hi, count)
        }

        #[target_feature(enable = "avx512f,avx512vbmi2")]
        fn shrd_512(lo: __m512i, hi: __m512i, count: __m512i) -> __m512i {
            _mm512_shrdv_epi64(lo, hi, count)
        }

        /// One x86 kernel per vector width ($words u64 per vector) and funnel shift; needs
        /// `n >= $words`. The last vector of a row ends at `n`, overlapping the previous one:
        /// AND and OR are idempotent.
        macro_rules! kernel {
            ($name:ident, $feature:literal, $words:literal, $load:ident, $store:ident,
             $counts:ident, $funnel:ident, $and:ident, $or:ident) => {
                #[target_feature(enable = $feature)]
                pub(in super::super) unsafe fn $name<const OR: bool>(
                    dst: *mut u64,
                    stride: usize,
                    srcs: &[Source],
                    rows: usize,
                    n: usize,
                ) -> bool {
                    let mut counts = [$counts(0); super::MAX_TERMS + 1];
                    for (c, s) in counts.iter_mut().zip(srcs) {
                        *c = $counts(s.shift);
                    }
                    let mut ptrs = first_row(srcs);
                    for r in 0..rows {
                        let dst = dst.wrapping_add(r * stride);
                        // SAFETY: every access stays within the words of row r the caller
                        // guarantees (p + 1 is read only when the shift is not 0).
                        unsafe {
                            let word = |i: usize, k: usize| {
                                let lo = $load(ptrs[i].add(k).cast());
                                if srcs[i].shift == 0 {
                                    lo
                                } else {
                                    $funnel(lo, $load(ptrs[i].add(k + 1).cast()), counts[i])
                                }
                            };
                            let mut k = 0;
                            while k < n {
                                let at = k.min(n - $words);
                                let mut v = word(0, at);
                                for i in 1..srcs.len() {
                                    v = if OR {
                                        $or(v, word(i, at))
                                    } else {
                                        $and(v, word(i, at))
                                    };
                                }
                                $store(dst.add(at).cast(), v);
                                k = at + $words;
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
            "sse2",
            2,
            _mm_loadu_si128,
            _mm_storeu_si128,
            counts_sll,
            srl_sll_128,
            _mm_and_si128,
            _mm_or_si128
        );
        kernel!(
            avx2,
            "avx2",
            4,
            _mm256_loadu_si256,
            _mm256_storeu_si256,
            counts_sll,
            srl_sll_256,
            _mm256_and_si256,
            _mm256_or_si256
        );
        kernel!(
            avx512,
            "avx512f",
            8,
            _mm512_loadu_si512,
            _mm512_storeu_si512,
            counts_sll,
            srl_sll_512,
            _mm512_and_si512,
            _mm512_or_si512
        );
        kernel!(
            avx2_vbmi2,
            "avx2,avx512vl,avx512vbmi2",
            4,
            _mm256_loadu_si256,
            _mm256_storeu_si256,
            counts_256,
            shrd_256,
            _mm256_and_si256,
            _mm256_or_si256
        );
        kernel!(
            avx512_vbmi2,
            "avx512f,avx512vbmi2",
            8,
            _mm512_loadu_si512,
            _mm512_storeu_si512,
            counts_512,
            shrd_512,
            _mm512_and_si512,
            _mm512_or_si512
        );
    }

    #[cfg(target_arch = "aarch64")]
    mod arm {
        use super::{Source, first_row, next_row};
        use std::arch::aarch64::*;

        /// As the x86 kernels, two words per vector; needs `n >= 2`. USHL by a negative count
        /// shifts right.
        #[target_feature(enable = "neon")]
        pub(in super::super) unsafe fn neon<const OR: bool>(
            dst: *mut u64,
            stride: usize,
            srcs: &[Source],
            rows: usize,
            n: usize,
        ) -> bool {
            let mut ptrs = first_row(srcs);
            for r in 0..rows {
                let dst = dst.wrapping_add(r * stride);
                // SAFETY: every access stays within the words of row r the caller guarantees.
                unsafe {
                    let word = |i: usize, k: usize| {
                        let lo = vld1q_u64(ptrs[i].add(k));
                        let shift = i64::from(srcs[i].shift);
                        if shift == 0 {
                            lo
                        } else {
                            let (right, left) = (vdupq_n_s64(-shift), vdupq_n_s64(64 - shift));
                            vorrq_u64(
                                vshlq_u64(lo, right),
                                vshlq_u64(vld1q_u64(ptrs[i].add(k + 1)), left),
                            )
                        }
                    };
                    let mut k = 0;
                    while k < n {
                        let at = k.min(n - 2);
                        let mut v = word(0, at);
                        for i in 1..srcs.len() {
                            v = if OR {
                                vorrq_u64(v, word(i, at))
                            } else {
                                vandq_u64(v, word(i, at))
                            };
                        }
                        vst1q_u64(dst.add(at), v);
                        k = at + 2;
                    }
                }
                next_row(&mut ptrs, srcs);
            }
            true
        }
    }
}
