//! Which of tract's two AVX-512 VNNI int8 matmul tiles the plans use, chosen by timing both.
//!
//! tract takes the zmm 16×16 tile only where a probe of raw VPDPBUSD throughput finds two
//! 512-bit FMA ports, and the ymm 8×8 elsewhere. The wider tile also loads half as many packed
//! bytes per multiply-add, which its probe does not see: on an AMD EPYC (Zen 5) the probe finds
//! one port, and YOLOv8n-320's int8 plan runs about 10% faster on the 16×16 all the same.
//! [`choose`] times both tiles on convolution-shaped products before the first plan is made,
//! and sets tract's `TRACT_AVX512_FMA_UNITS` knob to the answer that makes tract pick the
//! faster one. A knob the user set is kept. Both tiles give the same i32 sums: the choice
//! changes speed only.

/// tract's two VNNI int8 tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// `avx512vnni_mmm_i32_8x8`, on ymm registers.
    Ymm8x8,
    /// `avx512vnni_mmm_i32_16x16`, on zmm registers.
    Zmm16x16,
}

impl Tile {
    pub fn kernel(self) -> &'static str {
        match self {
            Tile::Ymm8x8 => "avx512vnni_mmm_i32_8x8",
            Tile::Zmm16x16 => "avx512vnni_mmm_i32_16x16",
        }
    }

    /// What `TRACT_AVX512_FMA_UNITS` says for tract to pick this tile.
    fn fma_units(self) -> &'static str {
        match self {
            Tile::Ymm8x8 => "1",
            Tile::Zmm16x16 => "2",
        }
    }
}

/// The tile the plans made from now on use, timed and set once per process before tract's
/// first int8 kernel query: `None` where the CPU or this build has no VNNI tiles, or where
/// `TRACT_AVX512_FMA_UNITS` was already set (tract then follows it).
pub fn choose() -> Option<Tile> {
    static CHOICE: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        if tract_linalg::knobs::TRACT_AVX512_FMA_UNITS.get().is_some() {
            return None;
        }
        let tile = imp::fastest()?;
        tract_linalg::knobs::TRACT_AVX512_FMA_UNITS.set(Some(tile.fma_units().to_string()));
        Some(tile)
    })
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::time::{Duration, Instant};

    use tract_linalg::MmmDispatch;
    use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    use tract_linalg::pack::PackedI8K4;
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::internal::format_err;

    use super::Tile;

    /// (m, k, n): a 3×3 convolution from 64 to 64 channels over a 40×40 map, and a 1×1 one
    /// over 80×80, as YOLO-family and depthwise-separable detectors run them.
    const SHAPES: [(usize, usize, usize); 2] = [(64, 576, 1600), (64, 64, 6400)];

    /// Timed runs of each product on each tile, taking turns; the fastest of each counts.
    const ROUNDS: usize = 5;

    /// The tile whose summed fastest times are lower; the 8×8 (tract's own answer on one
    /// port) unless the 16×16 is at least 3% faster, so that noise does not flip it.
    pub fn fastest() -> Option<Tile> {
        let [narrow, wide] = kernels()?;
        let times = multithread_tract_scope(Executor::SingleThread, || -> TractResult<_> {
            let mut best = [Duration::MAX; 2];
            for (m, k, n) in SHAPES {
                let products = [
                    Product::new(&*narrow, m, k, n)?,
                    Product::new(&*wide, m, k, n)?,
                ];
                let mut fastest = [Duration::MAX; 2];
                for _ in 0..ROUNDS {
                    for (f, p) in fastest.iter_mut().zip(&products) {
                        *f = (*f).min(p.time()?);
                    }
                }
                for (b, f) in best.iter_mut().zip(fastest) {
                    *b = if *b == Duration::MAX { f } else { *b + f };
                }
            }
            Ok(best)
        })
        .ok()?;
        Some(if times[1].as_secs_f64() < 0.97 * times[0].as_secs_f64() {
            Tile::Zmm16x16
        } else {
            Tile::Ymm8x8
        })
    }

    /// This CPU's and build's kernels of both tiles, narrow first.
    fn kernels() -> Option<[Box<dyn MatMatMul>; 2]> {
        let find = |t: Tile| {
            MmmDispatch::native()
                .runnable()
                .iter()
                .find(|k| k.name() == t.kernel())
                .cloned()
        };
        Some([find(Tile::Ymm8x8)?, find(Tile::Zmm16x16)?])
    }

    /// `len` operand values spanning -127..=127.
    fn values(len: usize) -> impl Iterator<Item = i8> {
        (0..len).map(|i| ((i * 37 % 255) as i32 - 127) as i8)
    }

    /// One i8 × i8 → i32 product on one kernel, its operands packed once.
    struct Product<'k> {
        kernel: &'k dyn MatMatMul,
        packing: usize,
        a: Box<dyn MMMInputValue>,
        b: Box<dyn MMMInputValue>,
        c: Tensor,
    }

    impl<'k> Product<'k> {
        fn new(kernel: &'k dyn MatMatMul, m: usize, k: usize, n: usize) -> TractResult<Self> {
            let packing = kernel
                .packings()
                .iter()
                .position(|(a, b)| {
                    a.downcast_ref::<PackedI8K4>().is_some()
                        && b.downcast_ref::<PackedI8K4>().is_some()
                })
                .ok_or_else(|| format_err!("{} has no i8 × i8 packing", kernel.name()))?;
            let (pack_a, pack_b) = &kernel.packings()[packing];
            let a = tensor1(&values(m * k).collect::<Vec<_>>()).into_shape(&[m, k])?;
            let b = tensor1(&values(k * n).collect::<Vec<_>>()).into_shape(&[k, n])?;
            Ok(Product {
                kernel,
                packing,
                a: pack_a.prepare_one(&a, 1, 0)?,
                b: pack_b.prepare_one(&b, 0, 1)?,
                c: Tensor::zero::<i32>(&[m, n])?,
            })
        }

        fn time(&self) -> TractResult<Duration> {
            let start = Instant::now();
            self.run()?;
            Ok(start.elapsed())
        }

        /// The product, `[m, n]`.
        fn run(&self) -> TractResult<Tensor> {
            let [m, n] = [self.c.shape()[0], self.c.shape()[1]];
            let mut c = self.c.clone();
            // SAFETY: `c` is an m × n i32 tensor, the store the kernel's row-major view of
            // axes 0 and 1 describes; `a` and `b` are packed by this kernel's own packing.
            unsafe {
                let store = self.kernel.c_view(Some(0), Some(1)).wrap(&c.view_mut());
                let ops = [
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&*self.a),
                        b: AsInputValue::Borrowed(&*self.b),
                        packing: self.packing,
                    },
                    FusedSpec::Store(store),
                ];
                self.kernel.run(m, n, &ops)?;
            }
            Ok(c)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// What is timed is the product: both tiles give the plain one's i32 sums, on shapes
        /// no tile divides.
        #[test]
        fn both_tiles_multiply() {
            let Some([narrow, wide]) = kernels() else {
                println!("ISA path skipped: no AVX-512 VNNI tiles on this CPU or in this build");
                return;
            };
            for (m, k, n) in [(20, 36, 50), (3, 5, 17), (64, 64, 100)] {
                let ints = |len: usize| values(len).map(i32::from).collect::<Vec<_>>();
                let (a, b) = (ints(m * k), ints(k * n));
                let plain: Vec<i32> = (0..m * n)
                    .map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum())
                    .collect();
                for kernel in [&narrow, &wide] {
                    let c = Product::new(&**kernel, m, k, n).unwrap().run().unwrap();
                    assert_eq!(
                        c.try_as_plain_ram().unwrap().as_slice::<i32>().unwrap(),
                        plain,
                        "{} {m}×{k}×{n}",
                        kernel.name()
                    );
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    /// Only x86-64 has these tiles.
    pub fn fastest() -> Option<super::Tile> {
        None
    }
}
