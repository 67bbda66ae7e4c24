//! Update bundles: arbitrary bytes read as a bundle with one trusted key (the signer of
//! tests/bundle/valid.bundle, which seeds the corpus) are accepted only when signed by it and
//! otherwise refused with one line naming the bundle, never a panic. Nothing is written.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ocelli::update::bundle::{Bundle, Limits, PublicKey, read_public_key};

static SIGNER: LazyLock<PublicKey> = LazyLock::new(|| {
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/bundle/signer.pub");
    read_public_key(Path::new(key)).expect("the test signer's key")
});

fuzz_target!(|data: &[u8]| {
    // Bounds at the scale of the inputs, so that the size checks are reached too.
    let limits = Limits {
        bundle_bytes: 1 << 20,
        manifest_bytes: 64 << 10,
        file_bytes: 256 << 10,
    };
    let name = Path::new("fuzz.bundle");
    match Bundle::check_reader(name, data, data.len() as u64, &[*SIGNER], limits) {
        Ok(manifest) => assert_eq!(manifest.signer, ocelli::update::bundle::key_id(&SIGNER)),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.bundle: "), "{message}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
});
