//! A vectorised f32 → i8 QuantizeLinear for tract's optimised plans.
//!
//! tract 0.23.9 quantises one value at a time through a branchy software round-half-to-even
//! (~7 ns a value), which costs a ConvInteger model more than its int8 matmul saves.
//! [`FastQuantizeI8`] gives bit-identical results several values per instruction.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::QuantizeLinearI8;

use super::split;

/// The quantisation of `outlet` if an f32-input `QuantizeLinearI8` writes it: its parameters,
/// and the f32 input.
pub fn quantizer(
    model: &TypedModel,
    outlet: OutletId,
) -> TractResult<Option<(FastQuantizeI8, OutletId)>> {
    let node = model.node(outlet.node);
    let Some(op) = node
        .op_as::<ElementWiseOp>()
        .and_then(|op| op.0.downcast_ref::<QuantizeLinearI8>())
    else {
        return Ok(None);
    };
    // tract's op also takes i32 input, which no ONNX QuantizeLinear of ours produces.
    if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
        return Ok(None);
    }
    let fast = FastQuantizeI8 {
        scale: op.scale,
        zero_point: op.zero_point,
        // Keeps whatever quantisation parameters tract attached to the i8 output.
        output: model.outlet_fact(outlet)?.datum_type,
    };
    Ok(Some((fast, node.inputs[0])))
}

/// `clamp(round_half_to_even(x · scale) + zero_point, -128, 127)`: tract's `QuantizeLinearI8`
/// (whose `scale` is the reciprocal of ONNX's), vectorised.
#[derive(Debug, Clone)]
pub struct FastQuantizeI8 {
    pub scale: f32,
    pub zero_point: i8,
    pub output: DatumType,
}

impl PartialEq for FastQuantizeI8 {
    fn eq(&self, other: &Self) -> bool {
        self.scale.to_bits() == other.scale.to_bits()
            && self.zero_point == other.zero_point
            && self.output == other.output
    }
}

impl Eq for FastQuantizeI8 {}

impl Op for FastQuantizeI8 {
    fn name(&self) -> StaticName {
        "FastQuantizeLinearI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {} zero_point: {}",
            self.scale, self.zero_point
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FastQuantizeI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let plain = input.try_as_plain_ram()?;
        let xs = plain.as_slice::<f32>()?;
        // SAFETY: every element is written by `quantize` below before the tensor is read.
        let mut output = unsafe { Tensor::uninitialized_dt(self.output, input.shape())? };
        let mut out_plain = output.try_as_plain_ram_mut()?;
        let ys = out_plain.as_slice_mut::<i8>()?;
        // Value by value: any cut gives the same bytes.
        split(ys, 1, xs.len(), |first, ys| {
            quantize(&xs[first..][..ys.len()], self.scale, self.zero_point, ys);
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FastQuantizeI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// Quantises `xs` into `ys` (same length) exactly as tract's `quantize_linear_f32_i8`.
pub fn quantize(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::is_available() {
        avx512::quantize(xs, scale, zero_point, ys);
    } else {
        sse2::quantize(xs, scale, zero_point, ys);
    }
    #[cfg(target_arch = "aarch64")]
    neon::quantize(xs, scale, zero_point, ys);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    portable(xs, scale, zero_point, ys);
}

/// Chunks of a fixed width the compiler may vectorise (it does on armv7 with NEON).
pub fn portable(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
    const LANES: usize = 16;
    let zp = zero_point as f32;
    let mut xc = xs.chunks_exact(LANES);
    let mut yc = ys.chunks_exact_mut(LANES);
    for (x, y) in (&mut xc).zip(&mut yc) {
        for (x, y) in x.iter().zip(y) {
            *y = one(*x, scale, zp);
        }
    }
    for (x, y) in xc.remainder().iter().zip(yc.into_remainder()) {
        *y = one(*x, scale, zp);
    }
}

#[inline(always)]
fn one(x: f32, scale: f32, zp: f32) -> i8 {
    let r = (x * scale).round_ties_even();
    // tract casts the rounded value to i32 before adding the zero point: NaN becomes 0 there.
    let r = if r.is_nan() { 0.0 } else { r };
    // r is a whole number or infinite; beyond ±2^24 adding zp may round, but so far out of
    // range that the clamp gives the same bound.
    (r + zp).clamp(-128.0, 127.0) as i8
}

/// `sixteens` on `xs` into `ys` 16 values at a time, the rest through a zero-padded 16:
/// [`portable`]'s rounding is a library call on x86-64 without SSE4.1, and rows of a few
/// dozen values have a tail as often as not.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn by_sixteens(xs: &[f32], ys: &mut [i8], sixteens: impl Fn(&[f32], &mut [i8])) {
    assert_eq!(
        xs.len(),
        ys.len(),
        "quantize: input and output lengths differ"
    );
    let whole = xs.len() / 16 * 16;
    sixteens(&xs[..whole], &mut ys[..whole]);
    let tail = xs.len() - whole;
    if tail > 0 {
        let (mut x, mut y) = ([0.0; 16], [0; 16]);
        x[..tail].copy_from_slice(&xs[whole..]);
        sixteens(&x, &mut y);
        ys[whole..].copy_from_slice(&y[..tail]);
    }
}

#[cfg(target_arch = "x86_64")]
pub mod sse2 {
    use std::arch::x86_64::*;

    /// `cvtps2dq` converts rounding half to even (the default MXCSR mode Rust assumes) and the
    /// signed packs saturate to i8: 16 values in a dozen instructions, at any opt-level.
    pub fn quantize(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        let sixteens = |x: &_, y: &mut _| unsafe { sixteens(x, scale, zero_point, y) };
        super::by_sixteens(xs, ys, sixteens);
    }

    #[target_feature(enable = "sse2")]
    fn sixteens(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
        let s = _mm_set1_ps(scale);
        let zp = _mm_set1_epi32(zero_point as i32);
        for (x, y) in xs.chunks_exact(16).zip(ys.chunks_exact_mut(16)) {
            let a = _mm_packs_epi32(four(&x[0..4], s, zp), four(&x[4..8], s, zp));
            let b = _mm_packs_epi32(four(&x[8..12], s, zp), four(&x[12..16], s, zp));
            // SAFETY: `y` holds exactly 16 bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(y.as_mut_ptr().cast(), _mm_packs_epi16(a, b)) };
        }
    }

    #[target_feature(enable = "sse2")]
    #[inline]
    fn four(x: &[f32], s: __m128, zp: __m128i) -> __m128i {
        // SAFETY: callers pass exactly four values; the load is unaligned.
        let v = _mm_mul_ps(unsafe { _mm_loadu_ps(x.as_ptr()) }, s);
        // NaN → 0, as tract's cast to i32 does.
        let v = _mm_and_ps(v, _mm_cmpord_ps(v, v));
        // Beyond ±256 every zero point saturates the same way; cvtps2dq would wrap instead.
        let v = _mm_min_ps(_mm_max_ps(v, _mm_set1_ps(-256.0)), _mm_set1_ps(256.0));
        _mm_add_epi32(_mm_cvtps_epi32(v), zp)
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    pub fn is_available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// [`sse2`](super::sse2)'s steps on 16 values an instruction, and one saturating
    /// narrowing (`vpmovsdb`) for its two packs. Only where [`is_available`].
    pub fn quantize(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
        assert!(is_available(), "quantize: this CPU has no AVX-512");
        // SAFETY: the CPU has AVX-512 F, checked above.
        let sixteens = |x: &_, y: &mut _| unsafe { sixteens(x, scale, zero_point, y) };
        super::by_sixteens(xs, ys, sixteens);
    }

    #[target_feature(enable = "avx512f")]
    fn sixteens(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
        let s = _mm512_set1_ps(scale);
        let zp = _mm512_set1_epi32(zero_point as i32);
        for (x, y) in xs.chunks_exact(16).zip(ys.chunks_exact_mut(16)) {
            // SAFETY: `x` holds exactly 16 values; the load is unaligned.
            let q = unquantized(unsafe { _mm512_loadu_ps(x.as_ptr()) }, s, zp);
            // SAFETY: `y` holds exactly 16 bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(y.as_mut_ptr().cast(), _mm512_cvtsepi32_epi8(q)) };
        }
    }

    /// 16 values quantised as i32, before the saturation to i8 (`scale` and `zero_point`
    /// broadcast).
    ///
    /// # Safety
    /// Only where [`is_available`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub fn unquantized(x: __m512, scale: __m512, zero_point: __m512i) -> __m512i {
        let v = _mm512_mul_ps(x, scale);
        // NaN → 0, as tract's cast to i32 does.
        let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
        // Beyond ±256 every zero point saturates the same way; cvtps2dq would wrap instead.
        let v = _mm512_min_ps(
            _mm512_max_ps(v, _mm512_set1_ps(-256.0)),
            _mm512_set1_ps(256.0),
        );
        _mm512_add_epi32(_mm512_cvtps_epi32(v), zero_point)
    }
}

#[cfg(target_arch = "aarch64")]
pub mod neon {
    use std::arch::aarch64::*;

    /// `fcvtns` converts rounding half to even with NaN → 0 and saturates to i32, as tract's
    /// cast does; saturating adds and narrowings do the rest (23 instructions for 16 values),
    /// where the compiler's vectorisation of [`portable`](super::portable) rounds, compares,
    /// selects, clamps and converts separately.
    pub fn quantize(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
        // SAFETY: NEON is part of the aarch64 baseline.
        let sixteens = |x: &_, y: &mut _| unsafe { sixteens(x, scale, zero_point, y) };
        super::by_sixteens(xs, ys, sixteens);
    }

    #[target_feature(enable = "neon")]
    fn sixteens(xs: &[f32], scale: f32, zero_point: i8, ys: &mut [i8]) {
        let s = vdupq_n_f32(scale);
        let zp = vdupq_n_s32(zero_point as i32);
        for (x, y) in xs.chunks_exact(16).zip(ys.chunks_exact_mut(16)) {
            let a = vqmovn_high_s32(vqmovn_s32(four(&x[0..4], s, zp)), four(&x[4..8], s, zp));
            let b = vqmovn_high_s32(vqmovn_s32(four(&x[8..12], s, zp)), four(&x[12..16], s, zp));
            // SAFETY: `y` holds exactly 16 bytes.
            unsafe { vst1q_s8(y.as_mut_ptr(), vqmovn_high_s16(vqmovn_s16(a), b)) };
        }
    }

    /// A saturated sum lies out of i8's range, as tract's would.
    #[target_feature(enable = "neon")]
    #[inline]
    fn four(x: &[f32], s: float32x4_t, zp: int32x4_t) -> int32x4_t {
        // SAFETY: callers pass exactly four values.
        let v = vmulq_f32(unsafe { vld1q_f32(x.as_ptr()) }, s);
        vqaddq_s32(vcvtnq_s32_f32(v), zp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_i8;

    /// Halves, values a hair either side of them, out of range, and the specials; tract's
    /// i32 addition overflows past ±2^31 with a zero point, so those go through with zp 0
    /// (NaN, which tract casts to 0, with every zero point).
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            -300.0f32..300.0,
            (-300i32..300).prop_map(|i| i as f32 + 0.5),
            (-300i32..300, prop::bool::ANY)
                .prop_map(|(i, up)| f32::from_bits((i as f32 + 0.5).to_bits() + up as u32)),
            -1e8f32..1e8,
        ]
    }

    fn check(kernel: Kernel, xs: &[f32], scale: f32, zp: i8) {
        let mut ys = vec![0i8; xs.len()];
        kernel(xs, scale, zp, &mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(
                *y,
                quantize_linear_f32_i8(*x, scale, zp as i32),
                "x {x} scale {scale} zero point {zp}"
            );
        }
    }

    type Kernel = fn(&[f32], f32, i8, &mut [i8]);

    /// Every implementation this target has and this CPU runs: what [`quantize`] picks and
    /// each of its choices and fallbacks.
    fn kernels() -> Vec<Kernel> {
        let mut kernels: Vec<Kernel> = vec![quantize, portable];
        #[cfg(target_arch = "x86_64")]
        {
            kernels.push(sse2::quantize);
            if avx512::is_available() {
                kernels.push(avx512::quantize);
            } else {
                println!("quantize: AVX-512 skipped, this CPU lacks it");
            }
        }
        #[cfg(target_arch = "aarch64")]
        kernels.push(neon::quantize);
        kernels
    }

    proptest! {
        #[test]
        fn matches_tract(
            xs in prop::collection::vec(value(), 0..70),
            scale in prop_oneof![Just(1.0f32), Just(0.5f32), 0.01f32..20.0],
            zp in any::<i8>(),
        ) {
            for kernel in kernels() {
                check(kernel, &xs, scale, zp);
            }
        }
    }

    #[test]
    fn matches_tract_on_specials() {
        let xs = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            127.5,
            -128.5,
            128.5,
            f32::MIN_POSITIVE,
            8388609.0,
            16777217.0,
        ];
        let xs: Vec<f32> = xs.iter().cycle().take(xs.len() * 3).copied().collect();
        let in_i32: Vec<f32> = xs
            .iter()
            .copied()
            .filter(|x| x.is_nan() || x.abs() < 1e9)
            .collect();
        for kernel in kernels() {
            check(kernel, &xs, 1.0, 0);
            for zp in [-128, -1, 3, 127] {
                check(kernel, &in_i32, 1.0, zp);
            }
        }
    }
}
