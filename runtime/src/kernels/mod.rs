//! The runtime's own ops for tract's optimised plans: each replaces one of tract's ops where
//! tract's is slow, with the same results (bit-identical for integer paths), and is tested
//! against tract's op on whatever instruction set the CPU running the tests has.
//!
//! [`accelerate`] swaps them in after `into_optimized()`: tract's own passes recognise only
//! their ops, and fold or fuse them before this point where they can.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::QuantizeLinearI8;

pub mod im2col_i8;
pub mod quantize;

/// Replaces every f32-input `QuantizeLinearI8` of an optimised model by
/// [`quantize::FastQuantizeI8`], and every int8 `Im2col` it can by [`im2col_i8::FastIm2colI8`].
pub fn accelerate(mut model: TypedModel) -> TractResult<TypedModel> {
    for id in model.eval_order()? {
        let node = model.node(id);
        if let Some(fast) = im2col_i8::replacement(&model, node)? {
            let patch = TypedModelPatch::replace_single_op(&model, node, &node.inputs, fast)?;
            patch.apply(&mut model)?;
            continue;
        }
        let Some(op) = node
            .op_as::<ElementWiseOp>()
            .and_then(|op| op.0.downcast_ref::<QuantizeLinearI8>())
        else {
            continue;
        };
        // tract's op also takes i32 input, which no ONNX QuantizeLinear of ours produces.
        if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        let fast = quantize::FastQuantizeI8 {
            scale: op.scale,
            zero_point: op.zero_point,
            // Keeps whatever quantisation parameters tract attached to the i8 output.
            output: model.outlet_fact(OutletId::new(id, 0))?.datum_type,
        };
        let patch = TypedModelPatch::replace_single_op(&model, node, &node.inputs, fast)?;
        patch.apply(&mut model)?;
    }
    // The replaced nodes stay behind as unconnected placeholders until compacted.
    model.into_compact()
}
