//! One MJPEG camera frame: the first four bytes are the negotiated width and height (u16 LE
//! each), the rest is the frame. Decoding, then the colour and geometry stages the pipeline runs
//! next, must give an image of the negotiated size or an error, never a panic or a huge
//! allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocelli::capture::{Frame, PixelFormat};
use ocelli::imgproc::Image;
use ocelli::imgproc::color::{self, Layout, Order};
use ocelli::imgproc::geometry::{self, Interpolation};

fuzz_target!(|data: &[u8]| {
    let Some((size, jpeg)) = data.split_first_chunk::<4>() else {
        return;
    };
    let width = u16::from_le_bytes([size[0], size[1]]) as usize;
    let height = u16::from_le_bytes([size[2], size[3]]) as usize;
    let frame = Frame {
        id: 0,
        timestamp_us: 0,
        format: PixelFormat::Mjpeg,
        width,
        height,
        stride: width,
        data: jpeg,
        origin: "fuzz",
    };
    let mut rgb = Image::new(0, 0, 3);
    if frame.to_rgb(&mut rgb).is_err() {
        return;
    }
    assert_eq!((rgb.width, rgb.height), (width, height));
    let mut grey = Image::new(0, 0, 1);
    color::rgb_to_grey(
        &rgb.data,
        Layout::packed(width, height),
        Order::Rgb,
        &mut grey,
    )
    .expect("a decoded frame converts");
    let mut small = Image::new(0, 0, 3);
    if width > 0 && height > 0 {
        geometry::resize(&rgb, 32, 24, Interpolation::Linear, &mut small).expect("resizes");
    }
});
