//! Which matrix kernels tract runs on this machine.
//!
//! Under qemu-user (`just test-arm`) the runner, cross/qemu-user.sh, sets
//! `OCELLI_EXPECT_TRACT_KERNEL` to the kernel family the emulated CPU must get (`arm64simd`,
//! `armv7neon`): an emulated CPU that leaks SVE, or a NEON probe that fails, would otherwise pass
//! every test on kernels no board runs. Elsewhere the test only reports.

use std::io::Write;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::tract_linalg::{MmmDispatch, isa};

/// Matmul shapes (m, k, n) a small detector runs: a 3x3 convolution from 32 to 64 channels over a
/// 40x40 map as im2col, its 1x1 counterpart, and a matrix-vector product.
const SHAPES: [(&str, usize, usize, usize); 3] = [
    ("conv3x3", 64, 288, 1600),
    ("conv1x1", 64, 32, 1600),
    ("gemv", 64, 288, 1),
];

#[test]
fn tract_runs_the_expected_kernels() {
    let native = isa::native();
    let picks: Vec<(&str, String)> = SHAPES
        .iter()
        .map(|&(what, m, k, n)| {
            let kernel = MmmDispatch::native().preferred_kernel(
                f32::datum_type(),
                Some(m),
                Some(k),
                Some(n),
            );
            (
                what,
                kernel.map_or_else(|| "none".to_string(), |k| k.name().to_string()),
            )
        })
        .collect();
    #[cfg(target_arch = "aarch64")]
    let kind = format!(
        ", kind {:?}",
        tract_onnx::tract_core::tract_linalg::arm64::Kind::choose()
    );
    #[cfg(not(target_arch = "aarch64"))]
    let kind = String::new();
    // Written past the harness's capture: this is the log of which kernels the tests exercised.
    let _ = writeln!(
        std::io::stderr(),
        "tract: isa {} {native:?}{kind}, f32 kernels {picks:?}",
        native.nickname()
    );

    if let Ok(family) = std::env::var("OCELLI_EXPECT_TRACT_KERNEL") {
        for (what, kernel) in &picks {
            assert!(
                kernel.starts_with(&family),
                "{what}: tract picked {kernel}, expected one of the {family} family: name the CPU to qemu \
                 (-cpu cortex-a72) and, on armv7, set TRACT_CPU_ARM32_NEON=true"
            );
        }
    }
}

/// The kernels the runtime times ([`ocelli::kernels::mmm_choice`]) are the ones tract then picks
/// for a convolution's products. Its own test binary would cost a link; here no other test asks
/// for a kernel before the choice can be made: the test above asks for f32 ones, which tract
/// answers as it would anyway until the choice is made.
#[test]
fn tract_picks_the_timed_kernels() {
    let start = std::time::Instant::now();
    let choice = ocelli::kernels::mmm_choice::choose();
    let took = start.elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "tract: timed choice {choice:?} in {took:?}"
    );
    let pick = |dt: DatumType| {
        let kernel = MmmDispatch::native().preferred_kernel(dt, Some(64), Some(576), Some(1600));
        kernel.expect("a kernel").name().to_string()
    };
    if let Some(tile) = choice.int8 {
        assert_eq!(pick(i32::datum_type()), tile.kernel());
    }
    if let Some(f32s) = choice.f32 {
        let kernel = pick(f32::datum_type());
        assert!(f32s.allows(&kernel), "{f32s:?}: tract picked {kernel}");
    }
}
