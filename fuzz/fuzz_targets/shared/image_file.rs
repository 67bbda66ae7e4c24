//! An image file through the images source: the bytes are written to a file of the given
//! extension, which the source opens and decodes. Each must give a frame within the pixel bound
//! or an `Image` error (a refusal naming the file), never a panic or an allocation beyond what
//! the bound allows (libFuzzer's -rss_limit_mb catches those).

use ocelli::capture::{ImagesSource, Source};

/// Small enough to keep executions fast; the bound is checked the same way at any size.
const MAX_PIXELS: u64 = 1 << 20;

pub fn run(extension: &str, data: &[u8]) {
    let dir = std::env::temp_dir().join(format!("ocelli-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("input.{extension}"));
    std::fs::write(&path, data).unwrap();
    let Ok(mut source) = ImagesSource::open(&path, false, MAX_PIXELS) else {
        return;
    };
    match source.next_frame() {
        Ok(Some(frame)) => {
            assert!((frame.width * frame.height) as u64 <= MAX_PIXELS);
            assert_eq!(frame.data.len(), frame.width * frame.height * 3);
        }
        Ok(None) => panic!("a one-file source ended before its file"),
        Err(e) => assert!(e.is_frame_local(), "{e}"),
    }
}
