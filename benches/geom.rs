//! Colour, geometry, filter and edge operations on 640×480 frames; compare with
//! `python3 benches/opencv_geom_bench.py` (same inputs, OpenCV single-threaded). See docs/perf.md.

use criterion::{Criterion, criterion_group, criterion_main};
use ocelli::imgproc::Image;
use ocelli::imgproc::color::{self, Layout, Order};
use ocelli::imgproc::edges;
use ocelli::imgproc::filter::{self, Border};
use ocelli::imgproc::geometry::{self, Fit, Interpolation, Normalize, Placement, Preprocess};
use std::hint::black_box;

const PHOTO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/models/images/astronaut.png"
);

/// astronaut.png as 640×480 RGB, its grey version, and a YUYV frame built from both (luma from
/// grey, U from red, V from blue), as the Python script builds them.
fn inputs() -> (Image, Image, Vec<u8>) {
    let file = std::fs::File::open(PHOTO).unwrap_or_else(|e| panic!("{PHOTO}: {e}"));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        info.color_type,
        png::ColorType::Rgb,
        "{PHOTO} is expected to be RGB"
    );
    buf.truncate(info.buffer_size());
    let photo = Image::from_vec(info.width as usize, info.height as usize, 3, buf).unwrap();
    let mut rgb = Image::new(0, 0, 3);
    geometry::resize(&photo, 640, 480, Interpolation::Linear, &mut rgb).unwrap();
    let mut grey = Image::new(0, 0, 1);
    color::rgb_to_grey(&rgb.data, Layout::packed(640, 480), Order::Rgb, &mut grey).unwrap();
    let mut yuyv = vec![0; 640 * 480 * 2];
    for (i, (px, pair)) in rgb
        .data
        .chunks_exact(3)
        .zip(yuyv.chunks_exact_mut(2))
        .enumerate()
    {
        pair[0] = grey.data[i];
        pair[1] = if i % 2 == 0 { px[0] } else { px[2] };
    }
    (rgb, grey, yuyv)
}

fn homography() -> [[f64; 3]; 3] {
    let src = [[0.0, 0.0], [639.0, 0.0], [639.0, 479.0], [0.0, 479.0]];
    let dst = [[32.0, 24.0], [600.0, 10.0], [620.0, 470.0], [20.0, 440.0]];
    geometry::get_perspective_transform(&src, &dst).unwrap()
}

/// Registers `name`, and for the cases with a speed target also `name_portable`: the same work
/// with the portable kernel builds (what a CPU without AVX2 runs; `filter::portable_kernels`).
fn case(c: &mut Criterion, name: &str, portable_too: bool, mut f: impl FnMut()) {
    c.bench_function(name, |b| b.iter(&mut f));
    if portable_too {
        c.bench_function(&format!("{name}_portable"), |b| {
            b.iter(|| filter::portable_kernels(&mut f))
        });
    }
}

fn bench(c: &mut Criterion) {
    let (rgb, grey, yuyv) = inputs();
    let frame = Layout::packed(640, 480);
    let h = homography();
    let affine = [h[0], h[1]];
    let (linear, black) = (Interpolation::Linear, Border::Constant(0));
    let mut out = Image::new(0, 0, 3);
    let mut out16 = Image::<i16>::new(0, 0, 1);
    let pre = Preprocess {
        width: 320,
        height: 320,
        fit: Fit::Letterbox {
            placement: Placement::TopLeft,
            pad: 114,
        },
        rounding: Default::default(),
        interpolation: linear,
        normalize: Normalize {
            swap_rb: true,
            mean: [123.675, 116.28, 103.53],
            std: [57.0; 3],
        },
    };
    let mut tensor = vec![0.0; pre.tensor_len()];
    let mut decoded = Image::new(0, 0, 3);

    case(c, "yuyv_letterbox_nchw_320", true, || {
        color::yuyv_to_rgb(&yuyv, frame, Order::Rgb, &mut decoded).unwrap();
        pre.run(&decoded, &mut tensor).unwrap();
    });
    case(c, "yuyv_to_rgb_640x480", false, || {
        color::yuyv_to_rgb(&yuyv, frame, Order::Rgb, &mut out).unwrap()
    });
    case(c, "rgb_to_grey_640x480", false, || {
        color::rgb_to_grey(&rgb.data, frame, Order::Rgb, &mut out).unwrap()
    });
    for (name, interp) in [("linear", linear), ("area", Interpolation::Area)] {
        case(
            c,
            &format!("resize_{name}_640x480_to_416x312"),
            false,
            || geometry::resize(&rgb, 416, 312, interp, &mut out).unwrap(),
        );
    }
    case(c, "warp_perspective_linear_640x480", true, || {
        geometry::warp_perspective(&rgb, &h, 640, 480, linear, black, &mut out).unwrap()
    });
    case(c, "warp_affine_linear_640x480", false, || {
        geometry::warp_affine(&rgb, &affine, 640, 480, linear, black, &mut out).unwrap()
    });
    for (name, img, target) in [("grey", &grey, true), ("rgb", &rgb, false)] {
        case(c, &format!("gaussian_5x5_{name}_640x480"), target, || {
            filter::gaussian_blur(img, (5, 5), 0.0, 0.0, Border::Reflect101, &mut out).unwrap()
        });
    }
    case(c, "box_3x3_grey_640x480", false, || {
        filter::box_blur(&grey, 3, 3, Border::Reflect101, &mut out).unwrap()
    });
    for k in [3, 5] {
        case(c, &format!("median_{k}_grey_640x480"), false, || {
            filter::median_blur(&grey, k, &mut out).unwrap()
        });
    }
    case(c, "sobel_dx_3_grey_640x480", false, || {
        edges::sobel(&grey, 1, 0, 3, Border::Reflect101, &mut out16).unwrap()
    });
    for (name, l2) in [("", false), ("_l2", true)] {
        case(c, &format!("canny_50_150{name}_grey_640x480"), !l2, || {
            edges::canny(black_box(&grey), 50.0, 150.0, 3, l2, &mut out).unwrap()
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
