//! A JPEG file through the images source (see shared/image_file.rs).
#![no_main]

#[path = "shared/image_file.rs"]
mod image_file;

libfuzzer_sys::fuzz_target!(|data: &[u8]| image_file::run("jpg", data));
