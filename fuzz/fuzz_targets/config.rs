//! Config files: any text parses to a config or to an error naming the file and line, never a
//! panic; and what a valid config sets up (reconnect waits, a small synthetic source with its
//! scripted faults) runs without panicking. Paths resolve under a folder that does not exist,
//! so nothing outside is read.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ocelli::capture;
use ocelli::config::{Config, SourceConfig};
use ocelli::imgproc::Image;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/nonexistent/ocelli-fuzz/ocelli.toml");
    let config = match Config::parse(file, text) {
        Ok(config) => config,
        Err(e) => {
            // Every error must render: the message is what the user sees.
            let _ = e.to_string();
            return;
        }
    };
    for attempt in 0..=config.reconnect.delays_s.len() {
        let _ = config.reconnect.delay(attempt);
    }
    let SourceConfig::Synthetic { width, height, .. } = &config.source else {
        return;
    };
    if width * height > 64 * 64 {
        return;
    }
    let timeout = Duration::from_secs_f64(config.reconnect.frame_timeout_s);
    let mut source = capture::open(&config.source, timeout, |p| config.resolve(p))
        .expect("a synthetic source always opens");
    let mut rgb = Image::new(0, 0, 3);
    for _ in 0..8 {
        match source.next_frame() {
            Ok(Some(frame)) => {
                let _ = frame.to_rgb(&mut rgb);
            }
            Ok(None) => break,
            Err(e) if e.is_lost() => {
                let _ = source.reopen();
            }
            Err(e) => panic!("a synthetic source fails only by losing the camera: {e}"),
        }
    }
});
