//! Model files: tract fed arbitrary bytes must load the model or refuse it with an error, never
//! panic. Inputs are capped (and runs bounded with `-timeout`) so one case cannot build a
//! giant graph; the seeds are small valid models that the fuzzer mutates.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use ocelli::detect::load_plan_from_bytes;

const MAX_MODEL_BYTES: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&size, model)) = data.split_first() else {
        return;
    };
    if model.len() > MAX_MODEL_BYTES {
        return;
    }
    // Either the model's own input size or a small forced one, as `input_size` does.
    let input_size = (size & 1 == 1).then_some([8 + (size as usize >> 1) % 32, 8]);
    let _ = load_plan_from_bytes(Path::new("fuzz.onnx"), model, input_size);
});
