//! Which of tract's matrix kernels the plans run, where tract's own pick is not the faster on
//! this CPU: timed once per process, before the first plan.
//!
//! - **The int8 tile** ([`Tile`]). tract has two AVX-512 VNNI int8 kernels and takes the zmm
//!   16×16 only where a probe of raw VPDPBUSD throughput finds two 512-bit FMA ports; the wider
//!   tile also loads half as many packed bytes per multiply-add, which the probe does not see.
//!   The choice goes to tract through its `TRACT_AVX512_FMA_UNITS` knob.
//! - **The f32 kernels' width** ([`F32Kernels`]). On AVX-512 machines tract picks among its
//!   512-bit and 256-bit FMA f32 kernels with a cost model fitted on one desktop part. Where the
//!   256-bit ones are faster, a dispatch tier of the runtime's, asked before tract's, hands
//!   tract's own tiers the same query without the 512-bit kernels.
//!
//! On an AMD EPYC both of tract's picks were the slower: YOLOv8n-320's int8 plan ran about 10%
//! faster on the 16×16 tile, and its float plan about 13% faster on the 256-bit kernels.
//! A knob the user set is kept. Each kernel computes the same products: the choice changes
//! speed only (the f32 kernels sum in another order, within float rounding).

use std::sync::OnceLock;

/// What [`choose`] decided: `None` where there was no choice to make (no such kernels on this
/// CPU or in this build, or, for int8, tract's AMX ones outranking them) or where the user's
/// knob decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub int8: Option<Tile>,
    pub f32: Option<F32Kernels>,
}

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

/// Which of tract's f32 kernels the plans may run on an AVX-512 machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Kernels {
    /// tract's pick among all of them.
    Any,
    /// Only the 256-bit FMA ones (`fma_mmm_f32_*`), tract's pick among those.
    Fma256,
}

impl F32Kernels {
    /// Whether the plans may run `kernel`.
    pub fn allows(self, kernel: &str) -> bool {
        self == F32Kernels::Any || !kernel.starts_with(AVX512_F32)
    }
}

/// The name prefix of tract's 512-bit f32 kernels.
const AVX512_F32: &str = "avx512_mmm_f32_";

static CHOICE: OnceLock<Choice> = OnceLock::new();

/// The kernels the plans made from now on run, timed and set once per process before tract's
/// first kernel query.
pub fn choose() -> Choice {
    *CHOICE.get_or_init(|| {
        let int8 = if tract_linalg::knobs::TRACT_AVX512_FMA_UNITS.get().is_some() {
            None
        } else {
            imp::fastest_tile()
        };
        if let Some(tile) = int8 {
            let units = Some(tile.fma_units().to_string());
            tract_linalg::knobs::TRACT_AVX512_FMA_UNITS.set(units);
        }
        Choice {
            int8,
            f32: imp::fastest_f32(),
        }
    })
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::time::{Duration, Instant};

    use tract_linalg::MmmDispatch;
    use tract_linalg::isa::{Arch, Isa, IsaSet};
    use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul, Query, Suitable};
    use tract_linalg::mmm_tiers::{self, MmmTier};
    use tract_linalg::multithread::{Executor, multithread_tract_scope};
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::internal::format_err;

    use super::{CHOICE, F32Kernels, Tile};

    /// (m, k, n): a 3×3 convolution from 64 to 64 channels over a 40×40 map, and a 1×1 one
    /// over 80×80, as YOLO-family and depthwise-separable detectors run them.
    const SHAPES: [(usize, usize, usize); 2] = [(64, 576, 1600), (64, 64, 6400)];

    /// Timed runs of each product on each side, taking turns; the fastest of each counts.
    const ROUNDS: usize = 5;

    /// The 16×16 tile if it is at least 3% faster than the 8×8 (tract's answer on one port);
    /// no choice where the CPU has AMX, whose kernels tract picks over both.
    pub fn fastest_tile() -> Option<Tile> {
        if tract_linalg::isa::native().has(Isa::X86_64AmxInt8) {
            return None;
        }
        let [narrow, wide] = tiles()?;
        let faster = faster(DatumType::I32, |_| [narrow.clone(), wide.clone()]).ok()?;
        Some(if faster { Tile::Zmm16x16 } else { Tile::Ymm8x8 })
    }

    /// The 256-bit FMA kernels if, as tract picks them for each shape, they are at least 3%
    /// faster than what tract picks among all.
    pub fn fastest_f32() -> Option<F32Kernels> {
        if !tract_linalg::isa::native().has(Isa::X86_64Avx512f) {
            return None;
        }
        let picks = |(m, k, n): (usize, usize, usize)| {
            [F32Kernels::Any, F32Kernels::Fma256].map(|kernels| {
                pick(
                    kernels,
                    &Query::plain(DatumType::F32, Some(m), Some(k), Some(n)),
                )
                .expect("an f32 kernel")
            })
        };
        let faster = faster(DatumType::F32, picks).ok()?;
        Some(if faster {
            F32Kernels::Fma256
        } else {
            F32Kernels::Any
        })
    }

    /// This CPU's and build's kernels of both int8 tiles, narrow first.
    fn tiles() -> Option<[Box<dyn MatMatMul>; 2]> {
        let find = |t: Tile| {
            MmmDispatch::native()
                .runnable()
                .iter()
                .find(|k| k.name() == t.kernel())
                .cloned()
        };
        Some([find(Tile::Ymm8x8)?, find(Tile::Zmm16x16)?])
    }

    /// Whether the second of `kernels(shape)` sums to at least 3% less time than the first over
    /// [`SHAPES`], so that noise does not flip tract's answer.
    fn faster(
        acc: DatumType,
        kernels: impl Fn((usize, usize, usize)) -> [Box<dyn MatMatMul>; 2],
    ) -> TractResult<bool> {
        multithread_tract_scope(Executor::SingleThread, || {
            let mut total = [Duration::ZERO; 2];
            for shape in SHAPES {
                let [a, b] = kernels(shape);
                let products = [
                    Product::new(&*a, acc, shape)?,
                    Product::new(&*b, acc, shape)?,
                ];
                let mut fastest = [Duration::MAX; 2];
                for _ in 0..ROUNDS {
                    for (f, p) in fastest.iter_mut().zip(&products) {
                        *f = (*f).min(p.time()?);
                    }
                }
                for (t, f) in total.iter_mut().zip(fastest) {
                    *t += f;
                }
            }
            Ok(total[1].as_secs_f64() < 0.97 * total[0].as_secs_f64())
        })
    }

    /// The kernel tract's tiers pick for `query` among those `kernels` allows.
    fn pick(kernels: F32Kernels, query: &Query) -> Option<Box<dyn MatMatMul>> {
        let isa = tract_linalg::isa::native();
        pick_among(kernels, &isa, query, MmmDispatch::native().suitable(query))
    }

    /// The kernel tract's tiers for `isa` pick for `query` among the `suitable` ones `kernels`
    /// allows.
    fn pick_among(
        kernels: F32Kernels,
        isa: &IsaSet,
        query: &Query,
        suitable: impl IntoIterator<Item = Suitable>,
    ) -> Option<Box<dyn MatMatMul>> {
        let allowed: Vec<Suitable> = suitable
            .into_iter()
            .filter(|(mmm, _, _)| kernels.allows(mmm.name()))
            .collect();
        let ix = mmm_tiers::preferred(isa, &tracts_tiers(isa), DatumType::F32, query, &allowed)?;
        Some(allowed[ix].0.clone())
    }

    /// tract's tiers for `isa`, without this one.
    fn tracts_tiers(isa: &IsaSet) -> Vec<&'static MmmTier> {
        mmm_tiers::for_isa(isa)
            .into_iter()
            .filter(|t| t.name != TIER)
            .collect()
    }

    const TIER: &str = "ocelli-f32-width";

    /// Once [`super::choose`] has chosen the 256-bit kernels, an f32 query goes to tract's tiers
    /// without the 512-bit kernels; every other query, and every query before the choice, is
    /// left to them as it is.
    fn f32_width(
        isa: &IsaSet,
        acc: DatumType,
        query: &Query,
        suitable: &[Suitable],
    ) -> Option<&'static str> {
        let kernels = CHOICE.get()?.f32?;
        if acc != DatumType::F32 || kernels == F32Kernels::Any {
            return None;
        }
        let kernel = pick_among(kernels, isa, query, suitable.iter().cloned())?;
        // The name as the static dispatch table holds it.
        let native = MmmDispatch::native().runnable();
        native
            .iter()
            .find(|k| k.name() == kernel.name())
            .map(|k| k.name())
    }

    inventory::submit! {
        MmmTier {
            arch: Some(Arch::X86_64),
            // Above every tier of tract's: asked first, it passes on what it does not claim.
            precedence: 200,
            name: TIER,
            applies: |isa| isa.has(Isa::X86_64Avx512f),
            preferred: f32_width,
        }
    }

    /// `len` operand values spanning -127..=127.
    fn values(len: usize) -> impl Iterator<Item = i8> {
        (0..len).map(|i| ((i * 37 % 255) as i32 - 127) as i8)
    }

    /// One product on one kernel (i8 × i8 → i32, or f32), its operands packed once.
    struct Product<'k> {
        kernel: &'k dyn MatMatMul,
        packing: usize,
        a: Box<dyn MMMInputValue>,
        b: Box<dyn MMMInputValue>,
        c: Tensor,
    }

    impl<'k> Product<'k> {
        fn new(
            kernel: &'k dyn MatMatMul,
            acc: DatumType,
            (m, k, n): (usize, usize, usize),
        ) -> TractResult<Self> {
            let operand = if acc == DatumType::I32 {
                DatumType::I8
            } else {
                acc
            };
            let plain = tract_linalg::WeightType::Plain(operand);
            let packing = kernel
                .packings()
                .iter()
                .position(|(a, b)| a.precursor() == plain && b.precursor() == plain)
                .ok_or_else(|| format_err!("{} has no {operand:?} packing", kernel.name()))?;
            let (pack_a, pack_b) = &kernel.packings()[packing];
            let matrix = |len: usize, shape: [usize; 2]| -> TractResult<Tensor> {
                let t = tensor1(&values(len).collect::<Vec<_>>());
                t.cast_to_dt(operand)?.into_owned().into_shape(&shape)
            };
            Ok(Product {
                kernel,
                packing,
                a: pack_a.prepare_one(&matrix(m * k, [m, k])?, 1, 0)?,
                b: pack_b.prepare_one(&matrix(k * n, [k, n])?, 0, 1)?,
                c: Tensor::zero_dt(acc, &[m, n])?,
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
            // SAFETY: `c` is an m × n tensor of the kernel's accumulator, the store the
            // kernel's row-major view of axes 0 and 1 describes; `a` and `b` are packed by this
            // kernel's own packing.
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

        /// What is timed is the product: both int8 tiles give the plain one's i32 sums, and the
        /// f32 kernels either side would pick its f32 sums (exact here: small integers), on
        /// shapes no tile divides.
        #[test]
        fn the_timed_kernels_multiply() {
            for (m, k, n) in [(20, 36, 50), (3, 5, 17), (64, 64, 100)] {
                let ints = |len: usize| values(len).map(i32::from).collect::<Vec<_>>();
                let (a, b) = (ints(m * k), ints(k * n));
                let plain: Vec<i32> = (0..m * n)
                    .map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum())
                    .collect();
                let mut kernels = vec![];
                match tiles() {
                    Some(tiles) => kernels.extend(tiles.map(|t| (t, DatumType::I32))),
                    None => println!("ISA path skipped: no AVX-512 VNNI tiles on this CPU"),
                }
                for f32s in [F32Kernels::Any, F32Kernels::Fma256] {
                    let query = Query::plain(DatumType::F32, Some(m), Some(k), Some(n));
                    kernels.push((pick(f32s, &query).unwrap(), DatumType::F32));
                }
                for (kernel, acc) in kernels {
                    let c = Product::new(&*kernel, acc, (m, k, n))
                        .unwrap()
                        .run()
                        .unwrap();
                    let c = c.cast_to::<i32>().unwrap();
                    let c = c.try_as_plain_ram().unwrap();
                    let name = kernel.name();
                    assert_eq!(c.as_slice::<i32>().unwrap(), plain, "{name} {m}×{k}×{n}");
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    /// Only x86-64 has these choices.
    pub fn fastest_tile() -> Option<super::Tile> {
        None
    }

    pub fn fastest_f32() -> Option<super::F32Kernels> {
        None
    }
}
