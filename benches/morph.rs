//! Morphology: u8 images and bit-packed masks, erosion and dilation with the elements of
//! docs/perf.md, at 640×480 and 1920×1080. Inputs are the camera photo tiled to the size (the
//! masks: thresholded at 128), exactly as benches/opencv_morph_bench.py builds them for OpenCV.
//!
//! Each Criterion sample is the median time of single calls: on a shared machine a batch of
//! calls also times other processes' time slices, a single call rarely does. The OpenCV side
//! is measured the same way.
//!
//! `cargo bench -p ocelli --bench morph`, then `python3 benches/opencv_morph_bench.py` for the
//! side-by-side table.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ocelli::imgproc::Image;
use ocelli::imgproc::bitmask::BitMask;
use ocelli::imgproc::morph::{Border, MorphOp, Morphology, Shape, StructuringElement};

/// The camera photo (512×512 grey), from ../shared/models/images.
fn camera() -> Image {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/images/camera.png");
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the reference photos are needed)", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut data = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut data).unwrap();
    assert_eq!(
        info.color_type,
        png::ColorType::Grayscale,
        "camera.png should be grey"
    );
    data.truncate(info.buffer_size());
    Image::from_vec(info.width as usize, info.height as usize, 1, data).unwrap()
}

/// `iters` calls of `f`, reported as `iters` times the median call.
fn median_calls(iters: u64, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2] * iters as u32
}

fn tiled(photo: &Image, w: usize, h: usize) -> Image {
    let data = (0..w * h)
        .map(|i| photo.row((i / w) % photo.height)[(i % w) % photo.width])
        .collect();
    Image::from_vec(w, h, 1, data).unwrap()
}

fn morph(c: &mut Criterion) {
    let mut group = c.benchmark_group("morph");
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    let photo = camera();
    for (w, h) in [(640, 480), (1920, 1080)] {
        let grey = tiled(&photo, w, h);
        let binary = Image::from_vec(
            w,
            h,
            1,
            grey.data
                .iter()
                .map(|&p| if p >= 128 { 255 } else { 0 })
                .collect(),
        )
        .unwrap();
        let mask = BitMask::from_image(&binary).unwrap();
        for (name, shape, size) in [
            ("rect3", Shape::Rect, 3),
            ("rect5", Shape::Rect, 5),
            ("rect15", Shape::Rect, 15),
            ("ellipse5", Shape::Ellipse, 5),
            ("cross3", Shape::Cross, 3),
        ] {
            let element = StructuringElement::new(shape, size, size, None).unwrap();
            for (op_name, op) in [("erode", MorphOp::Erode), ("dilate", MorphOp::Dilate)] {
                let mut m = Morphology::new(op, &element, None, 1, Border::Neutral).unwrap();
                let mut out = Image::new(0, 0, 1);
                group.bench_function(format!("u8-{op_name}-{name}-{w}x{h}"), |b| {
                    b.iter_custom(|iters| median_calls(iters, || m.apply(&grey, &mut out).unwrap()))
                });
                let mut bits = BitMask::new(0, 0);
                group.bench_function(format!("bits-{op_name}-{name}-{w}x{h}"), |b| {
                    b.iter_custom(|iters| median_calls(iters, || m.apply_mask(&mask, &mut bits)))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, morph);
criterion_main!(benches);
