//! Uncompressed camera frames of any claimed geometry: a header picks the format, width, height
//! and stride, the rest is the buffer, usually of the wrong size. Conversion gives an image of
//! the claimed size or an error naming the frame, never a panic or an out-of-bounds read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocelli::capture::{Frame, PixelFormat};
use ocelli::imgproc::Image;

const FORMATS: [PixelFormat; 5] = [
    PixelFormat::Yuyv,
    PixelFormat::Nv12,
    PixelFormat::Grey,
    PixelFormat::Rgb24,
    PixelFormat::Bgr24,
];

fuzz_target!(|data: &[u8]| {
    let Some((head, buf)) = data.split_first_chunk::<7>() else {
        return;
    };
    let format = FORMATS[head[0] as usize % FORMATS.len()];
    // Small sizes keep each run quick; the size checks do not depend on scale.
    let width = u16::from_le_bytes([head[1], head[2]]) as usize % 1024;
    let height = u16::from_le_bytes([head[3], head[4]]) as usize % 1024;
    // A stride near the row length, or far from it.
    let stride = match i16::from_le_bytes([head[5], head[6]]) {
        s if s < 0 => format
            .min_stride(width)
            .saturating_sub(s.unsigned_abs() as usize),
        s => format.min_stride(width) + s as usize,
    };
    let frame = Frame {
        id: 1,
        timestamp_us: 0,
        format,
        width,
        height,
        stride,
        data: buf,
        origin: "fuzz",
    };
    let mut rgb = Image::new(0, 0, 3);
    if frame.to_rgb(&mut rgb).is_ok() {
        assert_eq!((rgb.width, rgb.height), (width, height));
        assert_eq!(rgb.data.len(), width * height * 3);
    }
});
