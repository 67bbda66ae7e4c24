//! Hostile input: corrupt and wrong-size camera frames and bad configs are errors naming what
//! is wrong, never a panic. Inputs the fuzz targets (fuzz/) found crashing are kept here.

use std::path::{Path, PathBuf};

use ocelli::capture::{CaptureError, Frame, PixelFormat, decode_image};
use ocelli::config::Config;
use ocelli::imgproc::Image;

fn cached(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/cache")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `just fetch` (models/fetch.sh) first",
        p.display()
    );
    p
}

fn mjpeg_frame(data: &[u8], width: usize, height: usize) -> Result<Image, CaptureError> {
    let mut rgb = Image::new(0, 0, 3);
    Frame {
        id: 7,
        timestamp_us: 0,
        format: PixelFormat::Mjpeg,
        width,
        height,
        stride: width,
        data,
        origin: "camera",
    }
    .to_rgb(&mut rgb)
    .map(|()| rgb)
}

#[test]
fn corrupt_and_wrong_size_mjpeg_frames_are_errors_naming_the_frame() {
    let path = cached("images/rocket.jpg");
    let jpeg = std::fs::read(&path).unwrap();
    let mut photo = Image::new(0, 0, 3);
    decode_image(&path, ocelli::limits::DEFAULT_MAX_PIXELS, &mut photo).unwrap();
    let (w, h) = (photo.width, photo.height);
    let good = mjpeg_frame(&jpeg, w, h).expect("the whole JPEG decodes");
    assert_eq!(good.data, photo.data);

    // A fixed xorshift stream: noise that is the same on every run.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..jpeg.len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut no_entropy = jpeg.clone();
    // Everything after the header, zeroed: the scan ends at once.
    let header = jpeg.windows(2).position(|m| m == [0xff, 0xda]).unwrap() + 20;
    no_entropy[header..].fill(0);
    let cases: [(&str, &[u8], usize, usize); 7] = [
        ("empty", &[], w, h),
        ("the header only", &jpeg[..header], w, h),
        ("cut in half", &jpeg[..jpeg.len() / 2], w, h),
        ("noise", &noise, w, h),
        ("a zeroed scan", &no_entropy, w, h),
        ("narrower than negotiated", &jpeg, w + 16, h),
        ("taller than negotiated", &jpeg, w, h - 8),
    ];
    for (case, data, width, height) in cases {
        match mjpeg_frame(data, width, height) {
            Err(e @ CaptureError::BadFrame { id: 7, .. }) => {
                assert!(
                    e.to_string().starts_with("camera: frame 7: MJPEG"),
                    "{case}: {e}"
                )
            }
            Err(e) => panic!("{case}: not a bad-frame error: {e}"),
            Ok(_) => panic!("{case}: accepted"),
        }
    }
}

#[test]
fn scripted_faults_must_last_0_to_3600_s() {
    for seconds in ["-1.0", "inf", "nan", "3601.0"] {
        let text = format!(
            "[source]\nkind = \"synthetic\"\nfaults = [{{ after = 1, seconds = {seconds} }}]\n"
        );
        let err = Config::parse(Path::new("/fuzz/ocelli.toml"), &text)
            .expect_err(seconds)
            .to_string();
        assert!(
            err.contains("source.faults[0].seconds") && err.contains("0 to 3600 s"),
            "{seconds}: {err}"
        );
    }
}

/// Inputs the `model` fuzz target found crashing tract (panics on a dangling output, a negative
/// dim, a missing edge, short padding), read as the target reads them: the first byte picks
/// the input size, the rest is the model. Each is refused with a load error naming the file.
#[test]
fn malformed_models_are_refused_not_panicked_on() {
    use ocelli::detect::{DetectError, load_plan_from_bytes};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/model");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "regression inputs missing from {}",
        dir.display()
    );
    for path in files {
        let input = std::fs::read(&path).unwrap();
        let (&size, model) = input.split_first().unwrap();
        let input_size = (size & 1 == 1).then_some([8 + (size as usize >> 1) % 32, 8]);
        match load_plan_from_bytes(&path, model, input_size) {
            Err(e @ DetectError::Load { .. }) => {
                assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}")
            }
            Err(e) => panic!("{}: not a load error: {e}", path.display()),
            Ok(_) => panic!("{}: loaded", path.display()),
        }
    }
}
