//! The activation after a convolution (ReLU, SiLU, LeakyReLU), applied by the runtime's
//! kernels to their outputs while those are in registers or cache: tract's op after them would
//! make a pass of its own over the whole tensor (RFB-320's 35 ReLUs, 13% of its float plan).

use tract_linalg::element_wise::ElementWise;
use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::math::Max;
use tract_onnx::tract_core::ops::nn::{LeakyRelu, Silu};

/// An activation tract runs as an op of its own after a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// The max with a constant: ONNX's Relu (and Clip's lower bound), 0.
    Max(f32),
    /// YOLO's Conv → BN → SiLU.
    Silu,
    /// NanoDet's; `x` below 0 becomes `alpha · x`.
    LeakyRelu(f32),
}

/// The activation that alone reads `outlet` (not itself an output of the model) and the
/// output it computes: tract's SiLU or LeakyReLU, or, in a decluttered model, its Max with one
/// constant value (what ONNX's Relu becomes before optimisation turns it into a by-scalar op).
pub fn after(model: &TypedModel, outlet: OutletId) -> TractResult<Option<(Activation, OutletId)>> {
    let Some(reader) = super::only_reader(model, outlet)? else {
        return Ok(None);
    };
    let node = model.node(reader.node);
    let found = match (node.op_as::<ElementWiseOp>(), node.op_as::<TypedBinOp>()) {
        (Some(ew), _) => match ew.0.downcast_ref::<LeakyRelu>() {
            Some(leaky) => Some(Activation::LeakyRelu(leaky.alpha)),
            None => ew.0.is::<Silu>().then_some(Activation::Silu),
        },
        (_, Some(bin)) if bin.0.is::<Max>() && node.inputs.len() == 2 => {
            let other = node.inputs[1 - reader.slot];
            let same_shape = model.outlet_fact(outlet)?.shape
                == model.outlet_fact(OutletId::new(node.id, 0))?.shape;
            match &model.outlet_fact(other)?.konst {
                Some(k) if same_shape && k.datum_type() == f32::datum_type() => {
                    let v = k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
                    let uniform = v.iter().all(|f| f.to_bits() == v[0].to_bits());
                    (!v.is_empty() && uniform && !v[0].is_nan()).then(|| Activation::Max(v[0]))
                }
                _ => None,
            }
        }
        _ => None,
    };
    Ok(found.map(|a| (a, OutletId::new(node.id, 0))))
}

impl Activation {
    /// The suffix of the name of an op applying it (`+Silu`).
    pub fn suffix(activation: Option<Activation>) -> &'static str {
        match activation {
            None => "",
            Some(Activation::Max(_)) => "+Max",
            Some(Activation::Silu) => "+Silu",
            Some(Activation::LeakyRelu(_)) => "+LeakyRelu",
        }
    }

    /// Ready to run: tract's kernel of it for this CPU fetched once.
    pub fn prepare(self) -> TractResult<Prepared> {
        let kernel = match self {
            Activation::Max(floor) => Kernel::Max(floor),
            Activation::Silu => Kernel::Silu(Func::Silu.ew_f32()?),
            Activation::LeakyRelu(alpha) => {
                Kernel::LeakyRelu(Func::LeakyRelu.ew_f32_param()?, alpha)
            }
        };
        Ok(Prepared(kernel))
    }
}

/// An [`Activation`] with tract's kernel of it.
pub struct Prepared(Kernel);

enum Kernel {
    Max(f32),
    Silu(Box<dyn ElementWise<f32>>),
    LeakyRelu(Box<dyn ElementWise<f32, f32>>, f32),
}

impl Prepared {
    /// On `values`, in place: tract's kernels for SiLU and LeakyReLU, the max otherwise.
    pub fn run(&self, values: &mut [f32]) -> TractResult<()> {
        match &self.0 {
            Kernel::Max(floor) => {
                for v in values {
                    *v = v.max(*floor);
                }
                Ok(())
            }
            Kernel::Silu(silu) => silu.run(values),
            Kernel::LeakyRelu(leaky, alpha) => leaky.run_with_params(values, *alpha),
        }
    }

    /// The name of tract's SiLU kernel it runs, if it runs one.
    #[cfg(target_arch = "x86_64")]
    pub fn silu_kernel(&self) -> Option<&str> {
        match &self.0 {
            Kernel::Silu(k) => Some(k.name()),
            _ => None,
        }
    }
}

/// The activations in AVX-512 registers.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::Activation;

    /// The name of tract's kernel [`silu`] replicates.
    pub const TRACTS_SILU: &str = "avx512_silu_f32";

    /// `activation` on `values` (whole vectors of 16), in place. Not inlined: in a kernel's
    /// loop, its constants would take the registers the accumulators need; one loop per
    /// activation.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    pub fn run(activation: Activation, values: &mut [f32]) {
        debug_assert!(values.len().is_multiple_of(16));
        let vectors = values.chunks_exact_mut(16);
        // SAFETY (each loop): 16 values in and out.
        match activation {
            Activation::Max(floor) => {
                let floor = _mm512_set1_ps(floor);
                for v in vectors {
                    unsafe {
                        let x = _mm512_loadu_ps(v.as_ptr());
                        _mm512_storeu_ps(v.as_mut_ptr(), _mm512_max_ps(x, floor));
                    }
                }
            }
            Activation::Silu => {
                for v in vectors {
                    unsafe { _mm512_storeu_ps(v.as_mut_ptr(), silu(_mm512_loadu_ps(v.as_ptr()))) }
                }
            }
            Activation::LeakyRelu(alpha) => {
                let alpha = _mm512_set1_ps(alpha);
                for v in vectors {
                    unsafe {
                        let x = _mm512_loadu_ps(v.as_ptr());
                        _mm512_storeu_ps(v.as_mut_ptr(), leaky_relu(x, alpha));
                    }
                }
            }
        }
    }

    /// tract's LeakyReLU: `alpha · x` below 0, `x` from 0 (signed zeros alike).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn leaky_relu(v: __m512, alpha: __m512) -> __m512 {
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
        _mm512_mask_mul_ps(v, below, v, alpha)
    }

    /// tract 0.23.9's `avx512_silu_f32` (x86_64/avx512/silu_f32.S.j2) instruction for
    /// instruction, its coefficients as written there: `f · (0.5 + z·P(z²) / Q(z²))`, `f =
    /// max(x, −14.5)`, `z = min(f, 14.5)`, Horner steps fused multiply-adds. That kernel runs
    /// with denormal inputs read as zero (MXCSR's DAZ): such an `x` becomes a zero of its sign
    /// here first (denormals arising inside cannot change its result).
    // The coefficients as tract's assembly writes them, digits past f32's included.
    #[allow(clippy::excessive_precision)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn silu(x: __m512) -> __m512 {
        const ALPHA: [f32; 5] = [
            4.37031012579801e-11,
            1.15627324459942e-07,
            6.08574864600143e-05,
            8.51377133304701e-03,
            2.48287947061529e-01,
        ];
        const BETA: [f32; 6] = [
            6.10247389755681e-13,
            5.76102136993427e-09,
            6.29106785017040e-06,
            1.70198817374094e-03,
            1.16817656904453e-01,
            9.93151921023180e-01,
        ];
        let bits = _mm512_castps_si512(x);
        let magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(i32::MAX));
        let nonzero = _mm512_test_epi32_mask(magnitude, magnitude);
        let denormal = _mm512_mask_cmplt_epu32_mask(nonzero, magnitude, _mm512_set1_epi32(1 << 23));
        let sign = _mm512_set1_epi32(i32::MIN);
        let x = _mm512_castsi512_ps(_mm512_mask_and_epi32(bits, denormal, bits, sign));
        let f = _mm512_max_ps(x, _mm512_set1_ps(-14.5));
        let z = _mm512_min_ps(f, _mm512_set1_ps(14.5));
        let w = _mm512_mul_ps(z, z);
        let horner = |c: &[f32]| {
            c[1..].iter().fold(_mm512_set1_ps(c[0]), |acc, c| {
                _mm512_fmadd_ps(acc, w, _mm512_set1_ps(*c))
            })
        };
        let num = _mm512_mul_ps(z, horner(&ALPHA));
        let sigmoid = _mm512_add_ps(_mm512_div_ps(num, horner(&BETA)), _mm512_set1_ps(0.5));
        _mm512_mul_ps(sigmoid, f)
    }
}

// The activations in registers are x86-64's alone.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The SiLU run in registers is tract's kernel on this CPU bit for bit: on NaN, ±∞, signed
    /// zeros, the f32 extremes, denormals and the clamps' neighbourhoods too.
    #[test]
    fn silu_in_registers_is_tracts() {
        use std::arch::x86_64::*;
        use std::io::Write;

        use crate::kernels::tests::f32_values;

        let kernel = Func::Silu.ew_f32().unwrap();
        if !std::arch::is_x86_feature_detected!("avx512f") || kernel.name() != avx512::TRACTS_SILU {
            // Past the harness's capture, for `just isa-skips` to count.
            let _ = writeln!(
                std::io::stderr(),
                "ISA path skipped: kernels::activation SiLU in registers (tract runs {})",
                kernel.name()
            );
            return;
        }
        let mut xs = f32_values(7, 4096);
        for edge in [14.5f32, -14.5, f32::MIN_POSITIVE] {
            let bits = edge.to_bits();
            xs.extend((bits - 40..bits + 40).map(f32::from_bits));
        }
        xs.extend([1, 2, 0x7f_ffff, 0x40_0000].map(f32::from_bits));
        xs.extend([1, 2, 0x7f_ffff, 0x40_0000].map(|b| -f32::from_bits(b)));
        xs.resize(xs.len().next_multiple_of(16), 1.0);
        let mut want = xs.clone();
        kernel.run(&mut want).unwrap();
        let ours: Vec<f32> = xs
            .chunks_exact(16)
            .flat_map(|x| {
                let mut y = [0f32; 16];
                // SAFETY: the CPU has AVX-512 F; both hold 16 values.
                unsafe {
                    _mm512_storeu_ps(y.as_mut_ptr(), avx512::silu(_mm512_loadu_ps(x.as_ptr())))
                };
                y
            })
            .collect();
        for ((x, w), o) in xs.iter().zip(&want).zip(&ours) {
            assert_eq!(
                w.to_bits(),
                o.to_bits(),
                "SiLU({x:e}): tract {w:e}, ours {o:e}"
            );
        }
    }
}
