//! f32 Add, Sub, Mul and Div where one operand is broadcast along one axis that is not the
//! last, as a softmax over channels subtracts its maximum (YOLOv8's distribution focal loss
//! head); i32 Add, Sub and Mul likewise, as tract takes an int8 input's zero point off the
//! accumulators of a matmul it could not fuse the subtraction into (on ARM, 1×1 layers it
//! plans with the positions as the matmul's rows).
//!
//! tract 0.23.9 has fast element-wise ops for operands of the same shape or a scalar, and goes
//! through ndarray's general broadcasting for the rest, ~2 ns a value: YOLOv8n-320's two Sub
//! took as long as its 65 SiLU. [`FastBroadcast`] runs each row of the axes after the
//! broadcast one against the operand's row, in place in the full operand's buffer when nothing
//! else holds it; each value is the same single f32 operation, so the results are tract's.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::{Add, Div, Mul, Sub};

use super::split;

/// tract's binary op on f32 or i32 `[outer, len, inner]` and `[outer, 1, inner]` operands (in
/// either order), `inner` > 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastBroadcast {
    pub op: TypedBinOp,
    pub kind: Kind,
    /// Which input is the full one.
    pub full: usize,
    /// The broadcast axis.
    pub axis: usize,
}

/// The operations this computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Add,
    Sub,
    Mul,
    Div,
}

/// The values the operations run on.
trait Value: Datum + Copy {
    fn apply(kind: Kind, a: Self, b: Self) -> Self;
}

impl Value for f32 {
    #[inline(always)]
    fn apply(kind: Kind, a: f32, b: f32) -> f32 {
        match kind {
            Kind::Add => a + b,
            Kind::Sub => a - b,
            Kind::Mul => a * b,
            Kind::Div => a / b,
        }
    }
}

/// Wrapping, as tract's release builds compute; no i32 Div is planned.
impl Value for i32 {
    #[inline(always)]
    fn apply(kind: Kind, a: i32, b: i32) -> i32 {
        match kind {
            Kind::Add => a.wrapping_add(b),
            Kind::Sub => a.wrapping_sub(b),
            Kind::Mul => a.wrapping_mul(b),
            Kind::Div => unreachable!("i32 Div is left to tract"),
        }
    }
}

/// The fast op standing for `node` when it is one this handles.
pub fn replacement(model: &TypedModel, node: &TypedNode) -> TractResult<Option<FastBroadcast>> {
    let Some(op) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    let mini = &op.0;
    let kind = if mini.is::<Add>() {
        Kind::Add
    } else if mini.is::<Sub>() {
        Kind::Sub
    } else if mini.is::<Mul>() {
        Kind::Mul
    } else if mini.is::<Div>() {
        Kind::Div
    } else {
        return Ok(None);
    };
    let facts = [
        model.outlet_fact(node.inputs[0])?,
        model.outlet_fact(node.inputs[1])?,
        model.outlet_fact(OutletId::new(node.id, 0))?,
    ];
    let dt = facts[2].datum_type;
    let takes = dt == f32::datum_type() || dt == i32::datum_type() && kind != Kind::Div;
    if !takes || facts.iter().any(|f| f.datum_type != dt) {
        return Ok(None);
    }
    let (Some(a), Some(b), Some(c)) = (
        facts[0].shape.as_concrete(),
        facts[1].shape.as_concrete(),
        facts[2].shape.as_concrete(),
    ) else {
        return Ok(None);
    };
    let full = if a == c { 0 } else { 1 };
    let part = [a, b][1 - full];
    if [a, b][full] != c || part.len() != c.len() {
        return Ok(None);
    }
    let differ: TVec<usize> = (0..c.len()).filter(|&i| part[i] != c[i]).collect();
    let &[axis] = &*differ else {
        return Ok(None);
    };
    if part[axis] != 1 || c[axis + 1..].iter().product::<usize>() < 2 {
        return Ok(None);
    }
    Ok(Some(FastBroadcast {
        op: op.clone(),
        kind,
        full,
        axis,
    }))
}

impl Op for FastBroadcast {
    fn name(&self) -> StaticName {
        format!("FastBroadcast<{:?}>", self.kind).into()
    }

    op_as_typed_op!();
}

impl EvalOp for FastBroadcast {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let part = inputs.remove(1 - self.full);
        // A copy only if the full operand is shared.
        let mut out = inputs.remove(0).into_tensor();
        if out.datum_type() == i32::datum_type() {
            self.run::<i32>(&mut out, &part)?;
        } else {
            self.run::<f32>(&mut out, &part)?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl FastBroadcast {
    fn run<T: Value>(&self, out: &mut Tensor, part: &Tensor) -> TractResult<()> {
        let shape = out.shape();
        let (len, inner) = (
            shape[self.axis],
            shape[self.axis + 1..].iter().product::<usize>(),
        );
        let part_plain = part.try_as_plain_ram()?;
        let part = part_plain.as_slice::<T>()?;
        let (kind, full_first) = (self.kind, self.full == 0);
        let mut plain = out.try_as_plain_ram_mut()?;
        let values = plain.as_slice_mut::<T>()?;
        let work = values.len();
        // Whole `[len, inner]` blocks, one row of `part` each.
        split(values, len * inner, work, |first, chunk| {
            for (o, block) in chunk.chunks_exact_mut(len * inner).enumerate() {
                let row = &part[(first + o) * inner..][..inner];
                for values in block.chunks_exact_mut(inner) {
                    for (v, p) in values.iter_mut().zip(row) {
                        *v = if full_first {
                            T::apply(kind, *v, *p)
                        } else {
                            T::apply(kind, *p, *v)
                        };
                    }
                }
            }
            Ok(())
        })
    }
}

impl TypedOp for FastBroadcast {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.op.output_facts(inputs)
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tract_onnx::tract_core::ops::binary::BinMiniOp;

    use super::*;
    use crate::kernels::tests::{bits, eval, f32_values};

    proptest! {
        /// Each operation, the broadcast operand first or second, over every axis but the
        /// last of shapes up to rank 4, on f32 (zeros and specials among the values) and i32
        /// (all but Div): tract's op bit for bit.
        #[test]
        fn computes_what_tract_does(
            shape in prop::collection::vec(1..6usize, 2..5),
            axis in 0..3usize,
            kind in 0..4usize,
            full in 0..2usize,
            seed in any::<u64>(),
            int in any::<bool>(),
        ) {
            let axis = axis % (shape.len() - 1);
            prop_assume!(shape[axis + 1..].iter().product::<usize>() > 1);
            let kind = if int { kind % 3 } else { kind };
            let mut part_shape = shape.clone();
            part_shape[axis] = 1;
            // i32 values whose products stay in range, where tract's debug build would panic.
            let values = |seed: u64, shape: &[usize]| {
                let f = f32_values(seed, shape.iter().product());
                match int {
                    true => {
                        let i: Vec<i32> =
                            f.iter().map(|v| (v.to_bits() % 60_001) as i32 - 30_000).collect();
                        Tensor::from_shape(shape, &i)
                    }
                    false => Tensor::from_shape(shape, &f),
                }
                .unwrap()
            };
            let (a, b) = (values(seed, &shape), values(!seed, &part_shape));
            let inputs = if full == 0 { [a, b] } else { [b, a] };
            let mini: Box<dyn BinMiniOp> = match kind {
                0 => Box::new(Add),
                1 => Box::new(Sub),
                2 => Box::new(Mul),
                _ => Box::new(Div),
            };
            let op = TypedBinOp(mini, None);
            let run = |op: &dyn EvalOp| eval(op, &[&inputs[0], &inputs[1]]);
            let want = run(&op);
            let fast = FastBroadcast {
                kind: [Kind::Add, Kind::Sub, Kind::Mul, Kind::Div][kind],
                op,
                full,
                axis,
            };
            let got = run(&fast);
            prop_assert_eq!(got.shape(), want.shape());
            match int {
                true => prop_assert_eq!(&got, &want, "{:?} {:?}", inputs, fast.kind),
                false => prop_assert_eq!(bits(&got), bits(&want), "{:?} {:?}", inputs, fast.kind),
            }
        }
    }
}
