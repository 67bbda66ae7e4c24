//! The runtime's GridSample (kernels::grid_sample, swapped for tract's), which RT-DETR's and
//! D-FINE's deformable attention sample with, against onnxruntime on random inputs: every mode (bilinear, nearest, bicubic), padding (zeros,
//! border, reflection) and `align_corners`, with grid points beyond the borders. Where
//! onnxruntime departs from the operator's specification (bicubic with border padding, where
//! it follows PyTorch), it is held to the specification's reference implementation
//! (`onnx.reference`), which the fixture then holds as `spec.json`.
//!
//! Generate the fixtures from the repository root with
//! `python3 tests/reference/gridsample.py target/fixtures/gridsample`.

mod raw;

use std::path::PathBuf;

use tract_onnx::prelude::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures/gridsample");
const SCRIPT: &str = "python3 tests/reference/gridsample.py target/fixtures/gridsample";
/// onnxruntime computes in f32 too; the sums of 4 (bilinear) or 16 (bicubic) weighted
/// samples round differently.
const TOLERANCE: f32 = 1e-4;

fn check(case: &str) {
    let dir = PathBuf::from(FIXTURES).join(case);
    let inputs = raw::read_manifest(&dir, "inputs.json", SCRIPT);
    let want = match dir.join("spec.json").exists() {
        true => raw::read_manifest(&dir, "spec.json", SCRIPT).swap_remove(0),
        false => raw::read_manifest(&dir, "outputs.json", SCRIPT).swap_remove(0),
    };
    let mut model = tract_onnx::onnx()
        .model_for_path(dir.join("model.onnx"))
        .unwrap();
    for (i, t) in inputs.iter().enumerate() {
        model.set_input_fact(i, f32::fact(&t.shape).into()).unwrap();
    }
    let model = model
        .into_optimized()
        .and_then(ocelli::kernels::accelerate)
        .unwrap();
    assert!(
        model
            .nodes()
            .iter()
            .any(|n| n.op().name() == "FastGridSample"),
        "{case}: the runtime's GridSample is not in the plan"
    );
    let plan = model.into_runnable().unwrap();
    let feed = inputs
        .iter()
        .map(|t| Tensor::from_shape(&t.shape, &t.data).unwrap().into_tvalue())
        .collect();
    let got = plan.run(feed).unwrap().remove(0);
    assert_eq!(got.shape(), &want.shape[..], "{case}");
    let got = got.to_plain_array_view::<f32>().unwrap();
    let (worst, at) = got
        .iter()
        .zip(&want.data)
        .enumerate()
        .map(|(i, (a, b))| ((a - b).abs(), i))
        .fold((0.0f32, 0), |m, v| if v.0 > m.0 { v } else { m });
    assert!(
        worst <= TOLERANCE,
        "{case}: differs from onnxruntime by {worst} at element {at}"
    );
}

macro_rules! cases {
    ($($test:ident => $case:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            check($case);
        }
    )*};
}

cases! {
    bilinear_zeros => "bilinear_zeros_0",
    bilinear_zeros_aligned => "bilinear_zeros_1",
    bilinear_border => "bilinear_border_0",
    bilinear_border_aligned => "bilinear_border_1",
    bilinear_reflection => "bilinear_reflection_0",
    bilinear_reflection_aligned => "bilinear_reflection_1",
    nearest_zeros => "nearest_zeros_0",
    nearest_zeros_aligned => "nearest_zeros_1",
    nearest_border => "nearest_border_0",
    nearest_border_aligned => "nearest_border_1",
    nearest_reflection => "nearest_reflection_0",
    nearest_reflection_aligned => "nearest_reflection_1",
    bicubic_zeros => "bicubic_zeros_0",
    bicubic_zeros_aligned => "bicubic_zeros_1",
    bicubic_border => "bicubic_border_0",
    bicubic_border_aligned => "bicubic_border_1",
    bicubic_reflection => "bicubic_reflection_0",
    bicubic_reflection_aligned => "bicubic_reflection_1",
    rtdetr_sized => "rtdetr_bilinear_zeros_0",
}
