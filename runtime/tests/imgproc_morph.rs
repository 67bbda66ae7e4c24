//! Morphology, threshold and connected components: pixel-exact against OpenCV fixtures, fast
//! paths against the reference implementation, and algebraic properties.

use ocelli::imgproc::Image;
use ocelli::imgproc::bitmask::BitMask;
use ocelli::imgproc::morph::{
    Border, MorphOp, Morphology, Shape, Simd, StructuringElement, reference,
};
use proptest::prelude::*;

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

/// A structuring element of any shape (custom ones with values in {-1, 0, 1}), up to 9×9.
fn element() -> impl Strategy<Value = StructuringElement> {
    let shaped = (
        prop_oneof![Just(Shape::Rect), Just(Shape::Cross), Just(Shape::Ellipse)],
        1..=9usize,
        1..=9usize,
    )
        .prop_flat_map(|(shape, w, h)| {
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
        Just(Border::Constant(255)),
    ]
}

fn op() -> impl Strategy<Value = MorphOp> {
    proptest::sample::select(MorphOp::ALL.to_vec())
}

/// An element with an anchor inside it.
fn anchored() -> impl Strategy<Value = (StructuringElement, Option<(usize, usize)>)> {
    element().prop_flat_map(|k| {
        let (w, h) = (k.width(), k.height());
        (Just(k), proptest::option::of((0..w, 0..h)))
    })
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

/// The same test bodies for every instruction set: each must equal the reference.
macro_rules! per_simd {
    ($($name:ident => $simd:expr),* $(,)?) => {$(
        mod $name {
            use super::*;

            fn simd() -> Option<Simd> {
                let simd = $simd;
                if !simd.is_available() {
                    eprintln!("{simd:?} not available on this CPU: not tested here");
                    return None;
                }
                Some(simd)
            }

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(400))]

                #[test]
                fn fast_equals_reference(
                    src in image(40),
                    (k, anchor) in anchored(),
                    op in op(),
                    iterations in 0..4usize,
                    border in border(),
                ) {
                    let Some(simd) = simd() else { return Ok(()) };
                    let fast = run(simd, &src, op, &k, anchor, iterations, border);
                    let mut expected = Image::new(0, 0, 1);
                    reference::morphology_ex(&src, &mut expected, op, &k, anchor, iterations, border)
                        .unwrap();
                    prop_assert_eq!(fast, expected);
                }

                #[test]
                fn bitmask_equals_u8_path(
                    src in binary_image(150),
                    (k, anchor) in anchored(),
                    op in op(),
                    iterations in 0..4usize,
                    border in binary_border(),
                ) {
                    let Some(simd) = simd() else { return Ok(()) };
                    let expected = run(simd, &src, op, &k, anchor, iterations, border);
                    let mut m = Morphology::new(op, &k, anchor, iterations, border)
                        .unwrap()
                        .with_simd(simd)
                        .unwrap();
                    let mut out = BitMask::new(0, 0);
                    m.apply_mask(&BitMask::from_image(&src).unwrap(), &mut out);
                    let mut got = Image::new(0, 0, 1);
                    out.store(&mut got);
                    prop_assert_eq!(got, expected);
                }
            }
        }
    )*};
}

per_simd!(
    scalar => Simd::Scalar,
    sse2 => Simd::Sse2,
    neon => Simd::Neon,
    avx2 => Simd::Avx2,
    avx512 => Simd::Avx512,
);
