//! Morphology, thresholds and connected components: pixel-exact against OpenCV's outputs
//! (fixtures from tests/reference/opencv_morph.py), every SIMD path against the per-pixel
//! reference, and algebraic properties.

use std::sync::OnceLock;

mod isa;

use ocelli::imgproc::Image;
use ocelli::imgproc::bitmask::{self, BitMask};
use ocelli::imgproc::morph::{
    Border, MorphError, MorphOp, Morphology, Shape, Simd, StructuringElement, reference,
};
use ocelli::imgproc::regions::{Connectivity, connected_components, region_boxes};
use ocelli::imgproc::threshold::{
    AdaptiveMethod, ThresholdError, ThresholdType, adaptive_threshold, threshold, threshold_otsu,
};
use proptest::prelude::*;
use serde::Deserialize;

// ---------------------------------------------------------------------------------------------
// Fixtures.

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures/morph");

#[derive(Deserialize)]
struct Manifest {
    opencv: String,
    inputs: Vec<Input>,
    elements: Vec<ElementCase>,
    morph: Vec<MorphCase>,
    threshold: Vec<ThresholdCase>,
    adaptive: Vec<AdaptiveCase>,
    components: Vec<ComponentCase>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    width: usize,
    height: usize,
    kind: String,
    offset: usize,
}

#[derive(Deserialize)]
struct ElementCase {
    shape: String,
    width: usize,
    height: usize,
    anchor: Option<(usize, usize)>,
    offset: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KernelSpec {
    Custom {
        custom: Vec<i8>,
        width: usize,
        height: usize,
    },
    Shaped {
        shape: String,
        width: usize,
        height: usize,
        elem_anchor: Option<(usize, usize)>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BorderSpec {
    Named(String),
    Constant(serde::de::IgnoredAny, u8),
}

#[derive(Deserialize)]
struct MorphCase {
    input: usize,
    op: String,
    kernel: KernelSpec,
    anchor: Option<(usize, usize)>,
    iterations: usize,
    border: BorderSpec,
    offset: usize,
}

#[derive(Deserialize)]
struct ThresholdCase {
    input: usize,
    #[serde(rename = "type")]
    kind: String,
    thresh: f64,
    maxval: f64,
    otsu: bool,
    ret: f64,
    offset: usize,
}

#[derive(Deserialize)]
struct AdaptiveCase {
    input: usize,
    method: String,
    #[serde(rename = "type")]
    kind: String,
    block: usize,
    c: f64,
    maxval: f64,
    offset: usize,
}

#[derive(Deserialize)]
struct ComponentCase {
    input: usize,
    connectivity: u8,
    count: usize,
    labels: usize,
    stats: usize,
    centroids: usize,
}

struct Fixtures {
    manifest: Manifest,
    data: Vec<u8>,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES_ONCE: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES_ONCE.get_or_init(|| {
        let read = |name: &str| {
            std::fs::read(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| {
                panic!(
                    "{FIXTURES}/{name}: {e}. Generate the fixtures with \
                     `python3 tests/reference/opencv_morph.py target/fixtures` (or `just fixtures`)"
                )
            })
        };
        let manifest: Manifest =
            serde_json::from_slice(&read("manifest.json")).expect("manifest.json");
        assert!(
            manifest.opencv.starts_with('5'),
            "fixtures from OpenCV {}",
            manifest.opencv
        );
        Fixtures {
            manifest,
            data: read("data.bin"),
        }
    })
}

impl Fixtures {
    fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        &self.data[offset..offset + len]
    }

    fn image(&self, input: usize) -> (Image, &Input) {
        let i = &self.manifest.inputs[input];
        (self.output(i, i.offset), i)
    }

    /// The u8 image of `input`'s size at `offset`.
    fn output(&self, i: &Input, offset: usize) -> Image {
        let data = self.bytes(offset, i.width * i.height).to_vec();
        Image::from_vec(i.width, i.height, 1, data).unwrap()
    }

    fn i32s(&self, offset: usize, n: usize) -> Vec<i32> {
        let b = self.bytes(offset, 4 * n);
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn f64s(&self, offset: usize, n: usize) -> Vec<f64> {
        let b = self.bytes(offset, 8 * n);
        b.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
}

fn shape(name: &str) -> Shape {
    match name {
        "rect" => Shape::Rect,
        "cross" => Shape::Cross,
        "ellipse" => Shape::Ellipse,
        other => panic!("unknown shape {other}"),
    }
}

impl MorphCase {
    fn op(&self) -> MorphOp {
        let names = [
            "erode", "dilate", "open", "close", "gradient", "tophat", "blackhat", "hitmiss",
        ];
        MorphOp::ALL[names.iter().position(|&n| n == self.op).expect("op name")]
    }

    fn kernel(&self) -> StructuringElement {
        match &self.kernel {
            KernelSpec::Custom {
                custom,
                width,
                height,
            } => StructuringElement::custom(*width, *height, custom.clone()).unwrap(),
            KernelSpec::Shaped {
                shape: s,
                width,
                height,
                elem_anchor,
            } => StructuringElement::new(shape(s), *width, *height, *elem_anchor).unwrap(),
        }
    }

    fn border(&self) -> Border {
        match &self.border {
            BorderSpec::Named(n) if n == "neutral" => Border::Neutral,
            BorderSpec::Named(n) if n == "replicate" => Border::Replicate,
            BorderSpec::Constant(_, v) => Border::Constant(*v),
            BorderSpec::Named(n) => panic!("unknown border {n}"),
        }
    }

    fn describe(&self, input: &Input) -> String {
        let k = self.kernel();
        format!(
            "{} {} {}x{} anchor {:?} iterations {} {:?} on {}",
            self.op,
            match &self.kernel {
                KernelSpec::Custom { .. } => "custom",
                KernelSpec::Shaped { shape, .. } => shape,
            },
            k.width(),
            k.height(),
            self.anchor,
            self.iterations,
            self.border(),
            input.name
        )
    }
}

fn threshold_type(name: &str) -> ThresholdType {
    match name {
        "binary" => ThresholdType::Binary,
        "binary_inv" => ThresholdType::BinaryInv,
        "trunc" => ThresholdType::Trunc,
        "tozero" => ThresholdType::ToZero,
        "tozero_inv" => ThresholdType::ToZeroInv,
        other => panic!("unknown threshold type {other}"),
    }
}

/// "n pixels differ, first at (x, y): got a, expected b", or None when equal.
fn difference<T: PartialEq + std::fmt::Debug + Copy>(
    got: &[T],
    expected: &[T],
    width: usize,
) -> Option<String> {
    assert_eq!(got.len(), expected.len(), "sizes differ");
    let diffs: Vec<usize> = (0..got.len()).filter(|&i| got[i] != expected[i]).collect();
    let &first = diffs.first()?;
    Some(format!(
        "{} pixels differ, first at ({}, {}): got {:?}, expected {:?}",
        diffs.len(),
        first % width.max(1),
        first / width.max(1),
        got[first],
        expected[first]
    ))
}

/// Panics listing the first failures, if any.
fn report(what: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} of {total} {what} cases differ from OpenCV:\n{}",
        failures.len(),
        failures
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn check_morphology_fixtures(simd: Simd, masks: bool) {
    let f = fixtures();
    let mut failures = Vec::new();
    let mut total = 0;
    let mut got = Image::new(0, 0, 1);
    let mut bits = BitMask::new(0, 0);
    for case in &f.manifest.morph {
        let (src, input) = f.image(case.input);
        let border = case.border();
        if masks && (input.kind != "binary" || border == Border::Constant(77)) {
            continue;
        }
        total += 1;
        let mut m = Morphology::new(
            case.op(),
            &case.kernel(),
            case.anchor,
            case.iterations,
            border,
        )
        .and_then(|m| m.with_simd(simd))
        .unwrap_or_else(|e| panic!("{}: {e}", case.describe(input)));
        if masks {
            m.apply_mask(&BitMask::from_image(&src).unwrap(), &mut bits);
            bits.store(&mut got);
        } else {
            m.apply(&src, &mut got).unwrap();
        }
        let expected = f.output(input, case.offset);
        if let Some(d) = difference(&got.data, &expected.data, input.width) {
            failures.push(format!("{}: {d}", case.describe(input)));
        }
    }
    assert!(total > 1000, "only {total} cases");
    report(
        if masks {
            "bit-packed morphology"
        } else {
            "morphology"
        },
        total,
        failures,
    );
}

/// Fast paths on rows of 1100 pixels (17+ words), and on rows just wide enough for the u8
/// direct pass (edge strips overlapping the inside): u8 against the reference, bits against u8.
fn check_wide_rows(simd: Simd) {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let elements = [
        StructuringElement::rect(3, 3).unwrap(),
        StructuringElement::rect(15, 15).unwrap(),
        StructuringElement::new(Shape::Ellipse, 5, 5, None).unwrap(),
        StructuringElement::new(Shape::Cross, 3, 3, None).unwrap(),
        StructuringElement::custom(4, 3, vec![1, 0, -1, 1, 1, 1, 0, 0, -1, 1, 1, 1]).unwrap(),
    ];
    for (w, h) in [(1100, 7), (1031, 19), (64, 9), (67, 5)] {
        let grey: Vec<u8> = (0..w * h).map(|_| next() as u8).collect();
        let binary: Vec<u8> = grey
            .iter()
            .map(|&p| if p & 1 == 1 { 255 } else { 0 })
            .collect();
        for src in [grey, binary].map(|d| Image::from_vec(w, h, 1, d).unwrap()) {
            let is_binary = src.data.iter().all(|&p| p == 0 || p == 255);
            for (k, op, border) in elements.iter().flat_map(|k| {
                [
                    (MorphOp::Erode, Border::Neutral),
                    (MorphOp::Dilate, Border::Replicate),
                    (MorphOp::HitMiss, Border::Constant(0)),
                ]
                .map(|(op, border)| (k, op, border))
            }) {
                let what = format!("{op:?} {}x{} {border:?} on {w}x{h}", k.width(), k.height());
                let fast = run(simd, &src, op, k, None, 1, border);
                let mut want = Image::new(0, 0, 1);
                reference::morphology_ex(&src, &mut want, op, k, None, 1, border).unwrap();
                assert!(fast == want, "{simd:?} u8 {what}");
                if is_binary {
                    let mut m = Morphology::new(op, k, None, 1, border)
                        .unwrap()
                        .with_simd(simd)
                        .unwrap();
                    let mut bits = BitMask::new(0, 0);
                    m.apply_mask(&BitMask::from_image(&src).unwrap(), &mut bits);
                    let mut got = Image::new(0, 0, 1);
                    bits.store(&mut got);
                    assert!(got == want, "{simd:?} bits {what}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// A random single-channel image, grey or binary (0/255).
fn image(max_side: usize) -> impl Strategy<Value = Image> {
    (1..=max_side, 1..=max_side, any::<bool>()).prop_flat_map(|(w, h, binary)| {
        let px = if binary {
            prop_oneof![Just(0u8), Just(255u8)].boxed()
        } else {
            any::<u8>().boxed()
        };
        proptest::collection::vec(px, w * h)
            .prop_map(move |data| Image::from_vec(w, h, 1, data).unwrap())
    })
}

fn binary_image(max_side: usize) -> impl Strategy<Value = Image> {
    (1..=max_side, 1..=max_side).prop_flat_map(|(w, h)| {
        proptest::collection::vec(prop_oneof![Just(0u8), Just(255u8)], w * h)
            .prop_map(move |data| Image::from_vec(w, h, 1, data).unwrap())
    })
}

fn shape_strategy() -> impl Strategy<Value = Shape> {
    prop_oneof![Just(Shape::Rect), Just(Shape::Cross), Just(Shape::Ellipse)]
}

/// A structuring element of any shape (custom ones with values in {-1, 0, 1}), up to 9×9.
fn element() -> impl Strategy<Value = StructuringElement> {
    let shaped = (shape_strategy(), 1..=9usize, 1..=9usize).prop_flat_map(|(shape, w, h)| {
        (Just(shape), Just(w), Just(h), 0..w, 0..h).prop_map(|(shape, w, h, ax, ay)| {
            StructuringElement::new(shape, w, h, Some((ax, ay))).unwrap()
        })
    });
    let custom = (1..=9usize, 1..=9usize).prop_flat_map(|(w, h)| {
        proptest::collection::vec(
            prop_oneof![3 => Just(1i8), 2 => Just(0i8), 1 => Just(-1i8)],
            w * h,
        )
        .prop_map(move |mut v| {
            v[0] = 1; // at least one element set
            StructuringElement::custom(w, h, v).unwrap()
        })
    });
    prop_oneof![shaped, custom]
}

/// An element with an anchor inside it (`None` = centre).
fn anchored() -> impl Strategy<Value = (StructuringElement, Option<(usize, usize)>)> {
    element().prop_flat_map(|k| {
        let (w, h) = (k.width(), k.height());
        (Just(k), proptest::option::of((0..w, 0..h)))
    })
}

/// A symmetric element about its centre: odd sides, any standard shape.
fn symmetric() -> impl Strategy<Value = StructuringElement> {
    (shape_strategy(), 0..5usize, 0..5usize).prop_map(|(shape, rw, rh)| {
        StructuringElement::new(shape, 2 * rw + 1, 2 * rh + 1, None).unwrap()
    })
}

fn border() -> impl Strategy<Value = Border> {
    prop_oneof![
        Just(Border::Neutral),
        Just(Border::Replicate),
        any::<u8>().prop_map(Border::Constant)
    ]
}

/// Borders under which the bit-packed path equals the u8 path on binary images.
fn binary_border() -> impl Strategy<Value = Border> {
    prop_oneof![
        Just(Border::Neutral),
        Just(Border::Replicate),
        Just(Border::Constant(0)),
        Just(Border::Constant(255))
    ]
}

fn op() -> impl Strategy<Value = MorphOp> {
    proptest::sample::select(MorphOp::ALL.to_vec())
}

fn run(
    simd: Simd,
    src: &Image,
    op: MorphOp,
    k: &StructuringElement,
    anchor: Option<(usize, usize)>,
    iterations: usize,
    border: Border,
) -> Image {
    let mut m = Morphology::new(op, k, anchor, iterations, border)
        .unwrap()
        .with_simd(simd)
        .unwrap();
    let mut dst = Image::new(0, 0, 1);
    m.apply(src, &mut dst).unwrap();
    dst
}

fn detected(
    src: &Image,
    op: MorphOp,
    k: &StructuringElement,
    iterations: usize,
    border: Border,
) -> Image {
    run(Simd::detect(), src, op, k, None, iterations, border)
}

fn invert(img: &Image) -> Image {
    Image::from_vec(
        img.width,
        img.height,
        1,
        img.data.iter().map(|&p| !p).collect(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Every instruction set: same bodies, each against OpenCV and against the reference.

macro_rules! per_simd {
    ($($name:ident => $simd:expr, $within:path),* $(,)?) => {$(
        mod $name {
            use super::*;

            /// Runs a test body in the configuration this module checks.
            fn within<R>(f: impl FnOnce() -> R) -> R {
                $within(f)
            }

            fn simd() -> Option<Simd> {
                let simd = $simd;
                let path = concat!("imgproc_morph::", stringify!($name));
                if !simd.is_available() {
                    isa::skipped(path, &format!("{simd:?}"));
                    return None;
                }
                if stringify!($name) == "avx512" && !vbmi2() {
                    isa::skipped(
                        concat!("imgproc_morph::", stringify!($name), " VBMI2 funnel shifts"),
                        "AVX-512 VBMI2",
                    );
                }
                Some(simd)
            }

            #[test]
            fn morphology_matches_opencv() {
                if let Some(simd) = simd() {
                    within(|| check_morphology_fixtures(simd, false));
                }
            }

            #[test]
            fn bitmask_morphology_matches_opencv() {
                if let Some(simd) = simd() {
                    within(|| check_morphology_fixtures(simd, true));
                }
            }

            /// Rows wide enough for every kernel width (AVX-512 needs two vectors per row).
            #[test]
            fn wide_rows_equal_reference() {
                if let Some(simd) = simd() {
                    within(|| check_wide_rows(simd));
                }
            }

            // The instruction set is checked before proptest makes its inputs: on a CPU
            // without it, making 300 of them took 8-13 s per test under emulation.
            #[test]
            fn fast_equals_reference() {
                let Some(simd) = simd() else { return };
                proptest!(ProptestConfig::with_cases(300), |(
                    src in image(40),
                    (k, anchor) in anchored(),
                    op in op(),
                    iterations in 0..4usize,
                    border in border(),
                )| {
                    let fast = within(|| run(simd, &src, op, &k, anchor, iterations, border));
                    let mut want = Image::new(0, 0, 1);
                    reference::morphology_ex(&src, &mut want, op, &k, anchor, iterations, border)
                        .unwrap();
                    prop_assert_eq!(fast, want);
                });
            }

            #[test]
            fn bitmask_equals_u8_path() {
                let Some(simd) = simd() else { return };
                proptest!(ProptestConfig::with_cases(300), |(
                    src in binary_image(150),
                    (k, anchor) in anchored(),
                    op in op(),
                    iterations in 0..4usize,
                    border in binary_border(),
                )| {
                    let expected = run(simd, &src, op, &k, anchor, iterations, border);
                    let mut m = Morphology::new(op, &k, anchor, iterations, border)
                        .unwrap()
                        .with_simd(simd)
                        .unwrap();
                    let mut out = BitMask::new(0, 0);
                    within(|| m.apply_mask(&BitMask::from_image(&src).unwrap(), &mut out));
                    let mut got = Image::new(0, 0, 1);
                    out.store(&mut got);
                    prop_assert_eq!(got, expected);
                });
            }
        }
    )*};
}

/// Whether the bit-packed kernels' AVX-512 path uses VBMI2 funnel shifts here.
fn vbmi2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512vbmi2")
        && std::arch::is_x86_feature_detected!("avx512vl");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` as it is.
fn as_is<R>(f: impl FnOnce() -> R) -> R {
    f()
}

per_simd!(
    scalar => Simd::Scalar, as_is,
    sse2 => Simd::Sse2, as_is,
    neon => Simd::Neon, as_is,
    avx2 => Simd::Avx2, as_is,
    avx512 => Simd::Avx512, as_is,
    avx512_without_vbmi2 => Simd::Avx512, bitmask::without_vbmi2,
);

// ---------------------------------------------------------------------------------------------
// Other fixtures.

#[test]
fn structuring_elements_match_opencv() {
    let f = fixtures();
    let mut failures = Vec::new();
    for e in &f.manifest.elements {
        let k = StructuringElement::new(shape(&e.shape), e.width, e.height, e.anchor).unwrap();
        let got: Vec<u8> = k.values().iter().map(|&v| v as u8).collect();
        if got != f.bytes(e.offset, e.width * e.height) {
            failures.push(format!(
                "{} {}x{} anchor {:?}",
                e.shape, e.width, e.height, e.anchor
            ));
        }
    }
    report("getStructuringElement", f.manifest.elements.len(), failures);
}

#[test]
fn threshold_matches_opencv() {
    let f = fixtures();
    let mut failures = Vec::new();
    let mut got = Image::new(0, 0, 1);
    for case in &f.manifest.threshold {
        let (src, input) = f.image(case.input);
        let kind = threshold_type(&case.kind);
        let ret = if case.otsu {
            threshold_otsu(&src, &mut got, case.maxval, kind)
        } else {
            threshold(&src, &mut got, case.thresh, case.maxval, kind)
        }
        .unwrap();
        let what = format!(
            "{} thresh {} maxval {} otsu {} on {}",
            case.kind, case.thresh, case.maxval, case.otsu, input.name
        );
        if ret != case.ret {
            failures.push(format!("{what}: returned {ret}, expected {}", case.ret));
        }
        if let Some(d) = difference(
            &got.data,
            f.output(input, case.offset).data.as_slice(),
            input.width,
        ) {
            failures.push(format!("{what}: {d}"));
        }
    }
    report("threshold", f.manifest.threshold.len(), failures);
}

#[test]
fn adaptive_threshold_matches_opencv() {
    let f = fixtures();
    let mut failures = Vec::new();
    let mut got = Image::new(0, 0, 1);
    for case in &f.manifest.adaptive {
        let (src, input) = f.image(case.input);
        let method = if case.method == "mean" {
            AdaptiveMethod::Mean
        } else {
            AdaptiveMethod::Gaussian
        };
        adaptive_threshold(
            &src,
            &mut got,
            case.maxval,
            method,
            threshold_type(&case.kind),
            case.block,
            case.c,
        )
        .unwrap();
        if let Some(d) = difference(
            &got.data,
            f.output(input, case.offset).data.as_slice(),
            input.width,
        ) {
            failures.push(format!(
                "{} {} block {} c {} maxval {} on {}: {d}",
                case.method, case.kind, case.block, case.c, case.maxval, input.name
            ));
        }
    }
    report("adaptiveThreshold", f.manifest.adaptive.len(), failures);
}

#[test]
fn connected_components_match_opencv() {
    let f = fixtures();
    let mut failures = Vec::new();
    let mut labels = Image::<i32>::new(0, 0, 1);
    let mut stats = Vec::new();
    for case in &f.manifest.components {
        let (src, input) = f.image(case.input);
        let connectivity = if case.connectivity == 4 {
            Connectivity::Four
        } else {
            Connectivity::Eight
        };
        let n = connected_components(&src, &mut labels, &mut stats, connectivity).unwrap();
        let what = format!("{}-connectivity on {}", case.connectivity, input.name);
        if n != case.count {
            failures.push(format!("{what}: {n} labels, expected {}", case.count));
            continue;
        }
        let expected = f.i32s(case.labels, input.width * input.height);
        if let Some(d) = difference(&labels.data, &expected, input.width) {
            failures.push(format!("{what}: labels: {d}"));
        }
        let got: Vec<i32> = stats
            .iter()
            .flat_map(|s| [s.left, s.top, s.width, s.height, s.area])
            .collect();
        if let Some(d) = difference(&got, &f.i32s(case.stats, 5 * n), 5) {
            failures.push(format!("{what}: stats (label, field): {d}"));
        }
        let got: Vec<u64> = stats
            .iter()
            .flat_map(|s| [s.centroid.0.to_bits(), s.centroid.1.to_bits()])
            .collect();
        let expected: Vec<u64> = f
            .f64s(case.centroids, 2 * n)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        if let Some(d) = difference(&got, &expected, 2) {
            failures.push(format!("{what}: centroids (label, axis) as f64 bits: {d}"));
        }
    }
    report(
        "connectedComponentsWithStats",
        f.manifest.components.len(),
        failures,
    );
}

// ---------------------------------------------------------------------------------------------
// Properties, with the detected instruction set.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// With OpenCV's default border, erosion and dilation by a symmetric element are adjoint,
    /// so opening and closing are idempotent.
    #[test]
    fn open_and_close_are_idempotent(src in image(40), k in symmetric(), iterations in 1..3usize) {
        for op in [MorphOp::Open, MorphOp::Close] {
            let once = detected(&src, op, &k, iterations, Border::Neutral);
            prop_assert_eq!(detected(&once, op, &k, iterations, Border::Neutral), once);
        }
    }

    /// An element containing its anchor erodes below and dilates above the image.
    #[test]
    fn erode_below_input_below_dilate(
        src in image(40),
        (k, anchor) in anchored(),
        iterations in 0..4usize,
        border in border(),
    ) {
        let (w, h) = (k.width(), k.height());
        let (ax, ay) = anchor.unwrap_or((w / 2, h / 2));
        let mut values = k.values().to_vec();
        values[ay * w + ax] = 1;
        let k = StructuringElement::custom(w, h, values).unwrap();
        let e = run(Simd::detect(), &src, MorphOp::Erode, &k, anchor, iterations, border);
        let d = run(Simd::detect(), &src, MorphOp::Dilate, &k, anchor, iterations, border);
        for ((&e, &s), &d) in e.data.iter().zip(&src.data).zip(&d.data) {
            prop_assert!(e <= s && s <= d, "{} <= {} <= {}", e, s, d);
        }
    }

    /// OpenCV correlates for both operations (the element is not reflected for dilation), so
    /// erosion is dilation of the complement, complemented, by the same element and anchor; a
    /// constant border complements too.
    #[test]
    fn erode_is_dual_to_dilate(
        src in image(40),
        (k, anchor) in anchored(),
        iterations in 0..4usize,
        border in border(),
    ) {
        let dual = match border {
            Border::Constant(c) => Border::Constant(!c),
            other => other,
        };
        let e = run(Simd::detect(), &src, MorphOp::Erode, &k, anchor, iterations, border);
        let d = run(Simd::detect(), &invert(&src), MorphOp::Dilate, &k, anchor, iterations, dual);
        prop_assert_eq!(e, invert(&d));
    }

    #[test]
    fn bitmask_round_trips(src in binary_image(150)) {
        let mask = BitMask::from_image(&src).unwrap();
        let mut back = Image::new(0, 0, 1);
        mask.store(&mut back);
        prop_assert_eq!(&back, &src);
        prop_assert_eq!(mask.count(), src.data.iter().filter(|&&p| p != 0).count());
        for y in 0..src.height {
            for x in 0..src.width {
                prop_assert_eq!(mask.get(x, y), src.data[y * src.width + x] != 0);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors and small contracts.

#[test]
fn bitmask_reads_any_nonzero_as_set_and_keeps_padding_clear() {
    let src = Image::from_vec(70, 1, 1, (0..70).map(|x| (x % 3) as u8).collect()).unwrap();
    let mut mask = BitMask::from_image(&src).unwrap();
    assert_eq!(mask.words_per_row(), 2);
    assert_eq!(mask.count(), (0..70).filter(|x| x % 3 != 0).count());
    mask.set(69, 0, false);
    mask.set(0, 0, true);
    assert!(mask.get(0, 0) && !mask.get(69, 0));
    let k = StructuringElement::rect(3, 1).unwrap();
    let mut m = Morphology::new(MorphOp::Dilate, &k, None, 1, Border::Constant(255)).unwrap();
    let mut out = BitMask::new(0, 0);
    m.apply_mask(&mask, &mut out);
    assert_eq!(out.row(0)[1] >> 6, 0, "bits past the width stay clear");
}

#[test]
fn invalid_arguments_are_refused() {
    let grey = Image::new(4, 4, 1);
    let rgb = Image::new(4, 4, 3);
    let k = StructuringElement::rect(3, 3).unwrap();
    let mut out = Image::new(0, 0, 1);
    assert_eq!(
        StructuringElement::rect(0, 3),
        Err(MorphError::EmptyKernel {
            width: 0,
            height: 3
        })
    );
    assert_eq!(
        StructuringElement::custom(2, 2, vec![1; 3]),
        Err(MorphError::KernelValues {
            width: 2,
            height: 2,
            len: 3
        })
    );
    assert_eq!(
        Morphology::new(MorphOp::Erode, &k, Some((3, 0)), 1, Border::Neutral).err(),
        Some(MorphError::AnchorOutside {
            x: 3,
            y: 0,
            width: 3,
            height: 3
        })
    );
    let empty = StructuringElement::custom(2, 1, vec![0, 0]).unwrap();
    assert_eq!(
        Morphology::new(MorphOp::Open, &empty, None, 1, Border::Neutral).err(),
        Some(MorphError::NoActiveElement)
    );
    // An all-zero element is fine for hit-or-miss (OpenCV copies the source).
    let mut m = Morphology::new(MorphOp::HitMiss, &empty, None, 1, Border::Neutral).unwrap();
    m.apply(&grey, &mut out).unwrap();
    assert_eq!(out, grey);
    assert_eq!(
        Morphology::new(MorphOp::Erode, &k, None, 1, Border::Neutral)
            .unwrap()
            .apply(&rgb, &mut out),
        Err(MorphError::NotSingleChannel { channels: 3 })
    );
    assert_eq!(
        threshold(&rgb, &mut out, 1.0, 255.0, ThresholdType::Binary),
        Err(ThresholdError::NotSingleChannel { channels: 3 })
    );
    let adaptive = |block, kind| {
        adaptive_threshold(
            &grey,
            &mut Image::new(0, 0, 1),
            255.0,
            AdaptiveMethod::Mean,
            kind,
            block,
            0.0,
        )
    };
    assert_eq!(
        adaptive(4, ThresholdType::Binary),
        Err(ThresholdError::BlockSize(4))
    );
    assert_eq!(
        adaptive(1, ThresholdType::Binary),
        Err(ThresholdError::BlockSize(1))
    );
    assert_eq!(
        adaptive(3, ThresholdType::Trunc),
        Err(ThresholdError::AdaptiveType(ThresholdType::Trunc))
    );
    if let Some(missing) = Simd::ALL.into_iter().find(|s| !s.is_available()) {
        let m = Morphology::new(MorphOp::Erode, &k, None, 1, Border::Neutral).unwrap();
        assert_eq!(
            m.with_simd(missing).err(),
            Some(MorphError::SimdUnavailable(missing))
        );
    }
}

#[test]
fn empty_images_give_empty_results() {
    let k = StructuringElement::rect(3, 3).unwrap();
    for (w, h) in [(0, 0), (0, 5), (5, 0)] {
        let src = Image::new(w, h, 1);
        let mut out = Image::new(2, 2, 1);
        Morphology::new(MorphOp::Gradient, &k, None, 2, Border::Replicate)
            .unwrap()
            .apply(&src, &mut out)
            .unwrap();
        assert_eq!((out.width, out.height, out.data.len()), (w, h, 0));
        let mut labels = Image::<i32>::new(0, 0, 1);
        let mut stats = Vec::new();
        assert_eq!(
            connected_components(&src, &mut labels, &mut stats, Connectivity::Eight),
            Ok(1)
        );
    }
}

#[test]
fn region_boxes_skip_background_and_small_regions() {
    let src = Image::from_vec(
        6,
        3,
        1,
        vec![255, 255, 0, 0, 0, 9, 255, 255, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7],
    )
    .unwrap();
    let mut labels = Image::<i32>::new(0, 0, 1);
    let mut stats = Vec::new();
    assert_eq!(
        connected_components(&src, &mut labels, &mut stats, Connectivity::Eight),
        Ok(4)
    );
    let boxes: Vec<_> = region_boxes(&stats, 2)
        .map(|(l, b)| (l, [b.x1, b.y1, b.x2, b.y2]))
        .collect();
    assert_eq!(
        boxes,
        [(1, [0.0, 0.0, 2.0, 2.0]), (3, [3.0, 2.0, 6.0, 3.0])]
    );
}
