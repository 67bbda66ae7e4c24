//! The framebuffer output, rendered into a regular file standing in for `/dev/fb0`.

use ocelli::detect::{BBox, Detection};
use ocelli::framebuffer::{Framebuffer, FramebufferConfig, FramebufferError, Geometry};
use ocelli::imgproc::Image;
use ocelli::overlay;

/// An empty file, removed when the guard is dropped.
fn scratch(name: &str) -> tempfile::TempPath {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-fb-{name}-"))
        .tempfile()
        .unwrap()
        .into_temp_path()
}

/// A 320×200 grey frame with a detection box drawn from (100, 50) to (220, 150).
fn annotated() -> Image {
    let mut rgb = Image::new(320, 200, 3);
    rgb.data.fill(90);
    let det = Detection {
        class_id: 0,
        score: 0.9,
        bbox: BBox {
            x1: 100.0,
            y1: 50.0,
            x2: 220.0,
            y2: 150.0,
        },
        landmarks: None,
    };
    overlay::draw_detections(&mut rgb, &[det], |_| "person 0.90".into());
    rgb
}

/// The pixel at `(x, y)` of a framebuffer file, as `(r, g, b)` with the low bits RGB565
/// loses filled with zeros.
fn pixel(bytes: &[u8], g: &Geometry, x: usize, y: usize) -> (u8, u8, u8) {
    let stride = g.line_length.map_or(g.width * g.bits_per_pixel / 8, |l| l) as usize;
    let at = y * stride + x * g.bits_per_pixel as usize / 8;
    match g.bits_per_pixel {
        16 => {
            let v = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
            (
                ((v >> 11) as u8) << 3,
                ((v >> 5) as u8 & 0x3f) << 2,
                (v as u8 & 0x1f) << 3,
            )
        }
        32 => (bytes[at + 2], bytes[at + 1], bytes[at]),
        _ => unreachable!(),
    }
}

#[test]
fn frames_are_letterboxed_and_packed_per_format() {
    let frame = annotated();
    let red = overlay::class_colour(0);
    let (r, g, b) = {
        use embedded_graphics::pixelcolor::RgbColor;
        (red.r(), red.g(), red.b())
    };
    // The box's left edge in the frame: the first class-coloured pixel on row 100.
    let edge = (0..frame.width)
        .find(|&x| frame.data[(100 * frame.width + x) * 3..][..3] == [r, g, b])
        .expect("the box is drawn");
    assert!((98..=101).contains(&edge), "edge at {edge}");
    let drop_low = |v: u8, bits: u32| v >> (8 - bits) << (8 - bits);
    for (geometry, rgb565) in [
        (
            Geometry {
                width: 320,
                height: 240,
                bits_per_pixel: 32,
                line_length: None,
            },
            false,
        ),
        (
            Geometry {
                width: 320,
                height: 240,
                bits_per_pixel: 16,
                line_length: Some(700),
            },
            true,
        ),
    ] {
        let path = scratch(&format!("{}", geometry.bits_per_pixel));
        let config = FramebufferConfig {
            device: path.to_path_buf(),
            geometry: Some(geometry),
        };
        let mut fb = Framebuffer::open(&config, path.to_path_buf()).unwrap();
        fb.show(&frame).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let stride = geometry
            .line_length
            .unwrap_or(320 * geometry.bits_per_pixel / 8);
        assert_eq!(bytes.len(), stride as usize * 240);
        let expect = |c: (u8, u8, u8)| match rgb565 {
            true => (drop_low(c.0, 5), drop_low(c.1, 6), drop_low(c.2, 5)),
            false => c,
        };
        // 320×200 fits at scale 1 with 20-row black bars above and below.
        for (x, y, want, what) in [
            (5, 5, (0, 0, 0), "top bar"),
            (300, 235, (0, 0, 0), "bottom bar"),
            (5, 25, (90, 90, 90), "background"),
            (160, 120, (90, 90, 90), "inside the box"),
            (edge, 120, (r, g, b), "the box's left edge"),
        ] {
            assert_eq!(
                pixel(&bytes, &geometry, x, y),
                expect(want),
                "{what} at ({x}, {y}), {} bpp",
                geometry.bits_per_pixel
            );
        }
    }
}

#[test]
fn a_scaled_frame_keeps_its_aspect() {
    // 640×400 onto 160×160: scale 0.25 to 160×100, bars of 30 rows.
    let mut frame = Image::new(640, 400, 3);
    frame.data.fill(200);
    let geometry = Geometry {
        width: 160,
        height: 160,
        bits_per_pixel: 32,
        line_length: None,
    };
    let path = scratch("scaled");
    let config = FramebufferConfig {
        device: path.to_path_buf(),
        geometry: Some(geometry),
    };
    Framebuffer::open(&config, path.to_path_buf())
        .unwrap()
        .show(&frame)
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for (y, want) in [(0, 0), (29, 0), (30, 200), (129, 200), (130, 0), (159, 0)] {
        assert_eq!(
            pixel(&bytes, &geometry, 80, y),
            (want, want, want),
            "row {y}"
        );
    }
}

#[test]
fn a_regular_file_without_geometry_is_refused() {
    let path = scratch("plain");
    let config = FramebufferConfig {
        device: path.to_path_buf(),
        geometry: None,
    };
    let e = Framebuffer::open(&config, path.to_path_buf()).unwrap_err();
    assert!(matches!(e, FramebufferError::Ioctl { .. }), "{e}");
    assert!(e.to_string().contains("geometry"), "{e}");
}
