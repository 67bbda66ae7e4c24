//! Native colour, geometry, filter and edge operations against OpenCV reference outputs.
//!
//! Fixtures come from `python3 tests/reference/opencv_geom.py target/fixtures/geom` (run at the
//! repository root). Each op is one table-driven test: every case of that op runs through the
//! same body and all mismatches are reported together.

use ocelli::imgproc::Image;
use ocelli::imgproc::color::{self, Layout, Order};
use ocelli::imgproc::edges;
use ocelli::imgproc::filter::{self, Border};
use ocelli::imgproc::geometry::{self, Fit, Interpolation, Normalize, Placement, Preprocess};
use serde_json::Value;

mod isa;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/fixtures/geom");

/// An array of a case, read from disk when the case runs.
struct Array {
    shape: Vec<usize>,
    dtype: String,
    file: PathBuf,
}

impl Array {
    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap_or_else(|e| panic!("{}: {e}", self.file.display()))
    }

    fn u8(&self) -> Vec<u8> {
        assert_eq!(self.dtype, "uint8");
        self.bytes()
    }

    fn i16(&self) -> Vec<i16> {
        assert_eq!(self.dtype, "int16");
        self.bytes()
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    fn f64(&self) -> Vec<f64> {
        assert_eq!(self.dtype, "float64");
        self.bytes()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn image(&self) -> Image {
        let (h, w, c) = self.hwc();
        Image::from_vec(w, h, c, self.u8()).unwrap()
    }

    /// Height, width, channels of an image-shaped array.
    fn hwc(&self) -> (usize, usize, usize) {
        (
            self.shape[0],
            self.shape[1],
            self.shape.get(2).copied().unwrap_or(1),
        )
    }
}

struct Case {
    op: String,
    name: String,
    params: Value,
    inputs: HashMap<String, Array>,
    outputs: HashMap<String, Array>,
}

impl Case {
    fn usize(&self, key: &str) -> usize {
        self.params[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: no param {key}", self.name)) as usize
    }

    fn str(&self, key: &str) -> &str {
        self.params[key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no param {key}", self.name))
    }

    fn order(&self) -> Order {
        match self.str("order") {
            "rgb" => Order::Rgb,
            "bgr" => Order::Bgr,
            other => panic!("{}: order {other}", self.name),
        }
    }

    fn f64(&self, key: &str) -> f64 {
        self.params[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{}: no param {key}", self.name))
    }

    fn bool(&self, key: &str) -> bool {
        self.params[key]
            .as_bool()
            .unwrap_or_else(|| panic!("{}: no param {key}", self.name))
    }

    /// A nested list of numbers as a flat vector.
    fn numbers(&self, key: &str) -> Vec<f64> {
        fn flatten(v: &Value, out: &mut Vec<f64>) {
            match v {
                Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
                n => out.push(n.as_f64().unwrap()),
            }
        }
        let mut out = Vec::new();
        flatten(&self.params[key], &mut out);
        out
    }

    fn points<const N: usize>(&self, key: &str) -> [[f32; 2]; N] {
        let v = self.numbers(key);
        std::array::from_fn(|i| [v[2 * i] as f32, v[2 * i + 1] as f32])
    }

    fn interpolation(&self) -> Interpolation {
        match self.str("interpolation") {
            "nearest" => Interpolation::Nearest,
            "linear" => Interpolation::Linear,
            "area" => Interpolation::Area,
            other => panic!("{}: interpolation {other}", self.name),
        }
    }

    fn border(&self) -> Border {
        match self.str("border") {
            "constant" => Border::Constant(self.params["border_value"].as_u64().unwrap_or(0) as u8),
            "replicate" => Border::Replicate,
            "reflect" => Border::Reflect,
            "reflect101" => Border::Reflect101,
            other => panic!("{}: border {other}", self.name),
        }
    }

    fn input(&self, key: &str) -> &Array {
        &self.inputs[key]
    }

    fn output(&self, key: &str) -> &Array {
        &self.outputs[key]
    }
}

fn manifest() -> &'static [Case] {
    static CASES: OnceLock<Vec<Case>> = OnceLock::new();
    CASES.get_or_init(|| {
        let dir = Path::new(FIXTURES);
        let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|e| {
            panic!(
                "{}: {e}. Generate the fixtures at the repository root with \
                 `python3 tests/reference/opencv_geom.py target/fixtures/geom`",
                dir.display()
            )
        });
        let json: Vec<Value> = serde_json::from_str(&text).unwrap();
        let array = |v: &Value| Array {
            shape: v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect(),
            dtype: v["dtype"].as_str().unwrap().to_owned(),
            file: dir.join(v["file"].as_str().unwrap()),
        };
        let arrays = |v: &Value| -> HashMap<String, Array> {
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), array(v)))
                .collect()
        };
        json.iter()
            .map(|c| Case {
                op: c["op"].as_str().unwrap().to_owned(),
                name: c["name"].as_str().unwrap().to_owned(),
                params: c["params"].clone(),
                inputs: arrays(&c["inputs"]),
                outputs: arrays(&c["outputs"]),
            })
            .collect()
    })
}

/// Runs `body` over every case of `op`, once with the dispatched row kernels (AVX2 where the CPU
/// has it) and once with the portable ones, then fails listing every case that did not match.
/// Off x86-64 the row kernels have no other build: the dispatched run is the portable one.
fn check(op: &str, body: impl Fn(&Case) -> Result<(), String>) {
    let cases: Vec<&Case> = manifest().iter().filter(|c| c.op == op).collect();
    assert!(
        !cases.is_empty(),
        "no fixtures for {op}: regenerate them with tests/reference/opencv_geom.py"
    );
    let run = |build: &str| -> Vec<String> {
        cases
            .iter()
            .filter_map(|c| {
                body(c)
                    .err()
                    .map(|e| format!("{op}/{} ({build}): {e}", c.name))
            })
            .collect()
    };
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    if !avx2 {
        isa::skipped("imgproc_geom AVX2 row kernels", "AVX2");
    }
    let mut failures = run("dispatched");
    let runs = if cfg!(target_arch = "x86_64") {
        failures.extend(filter::portable_kernels(|| run("portable")));
        2
    } else {
        1
    };
    assert!(
        failures.is_empty(),
        "{} of {} runs differ:\n{}",
        failures.len(),
        runs * cases.len(),
        failures.join("\n")
    );
}

/// How closely an operation must match OpenCV (docs/perf.md, "Exactness").
#[derive(Clone, Copy, PartialEq)]
enum Match {
    /// Every sample equal.
    Exact,
    /// `f32` division rounded differently: no sample off by more than one level, at most
    /// `MAX_OFF_SHARE` of them off by one, and no bias (mean signed error within `MAX_BIAS`).
    Rounding,
}

/// Bilinear perspective warps, the only `Rounding` operation, measure at most 0.029 % of
/// samples off by one and a mean signed error of 0.0003 per fixture; a uniform one-level bias,
/// or a sampling grid shifted by a fraction of a pixel, lands far above these.
const MAX_OFF_SHARE: f64 = 0.002;
const MAX_BIAS: f64 = 0.001;

/// Compares samples as `how` says.
fn compare<T: Copy + Into<f64>>(got: &[T], want: &[T], how: Match) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} != {}", got.len(), want.len()));
    }
    let (mut worst, mut off, mut signed) = ((0.0, 0), 0usize, 0.0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let e = g.into() - w.into();
        off += usize::from(e != 0.0);
        signed += e;
        if e.abs() > worst.0 {
            worst = (e.abs(), i);
        }
    }
    let n = got.len().max(1) as f64;
    let (share, bias) = (off as f64 / n, signed / n);
    let (d, i) = worst;
    match how {
        Match::Exact if off > 0 => Err(format!("{off} samples differ; worst by {d} at index {i}")),
        Match::Rounding if d > 1.0 || share > MAX_OFF_SHARE || bias.abs() > MAX_BIAS => {
            Err(format!(
                "{off} samples differ ({:.3} %, at most {} % may be off by one), mean signed \
                 error {bias:.4} (at most {MAX_BIAS}); worst by {d} at index {i}",
                100.0 * share,
                100.0 * MAX_OFF_SHARE
            ))
        }
        _ => Ok(()),
    }
}

/// `Rounding` lets a stray off-by-one through, not a bias nor a share of them.
#[test]
fn rounding_refuses_a_bias() {
    let want = vec![100u8; 10_000];
    let with = |every: usize, by: u8| -> Vec<u8> {
        (0..want.len())
            .map(|i| if i % every == 0 { 100 + by } else { 100 })
            .collect()
    };
    assert!(compare(&with(10_000, 1), &want, Match::Rounding).is_ok());
    assert!(compare(&with(10_000, 1), &want, Match::Exact).is_err());
    assert!(compare(&with(10_000, 2), &want, Match::Rounding).is_err());
    assert!(compare(&with(1, 1), &want, Match::Rounding).is_err());
    assert!(compare(&with(100, 1), &want, Match::Rounding).is_err());
}

fn compare_image(got: &Image, want: &Array, how: Match) -> Result<(), String> {
    let (h, w, c) = want.hwc();
    if (got.height, got.width, got.channels) != (h, w, c) {
        return Err(format!(
            "shape {}x{}x{} != {h}x{w}x{c}",
            got.height, got.width, got.channels
        ));
    }
    compare(&got.data, &want.u8(), how)
}

/// A colour conversion over a raw strided frame, exact.
fn color_case(
    c: &Case,
    convert: impl Fn(&[u8], Layout, &mut Image) -> Result<(), color::ColorError>,
) -> Result<(), String> {
    let layout = Layout::strided(c.usize("width"), c.usize("height"), c.usize("stride"));
    let mut dst = Image::new(0, 0, 1);
    convert(&c.input("src").u8(), layout, &mut dst).map_err(|e| e.to_string())?;
    compare_image(&dst, c.output("dst"), Match::Exact)
}

#[test]
fn yuyv_to_rgb() {
    check("yuyv_to_rgb", |c| {
        color_case(c, |s, l, d| color::yuyv_to_rgb(s, l, c.order(), d))
    });
}

#[test]
fn nv12_to_rgb() {
    check("nv12_to_rgb", |c| {
        color_case(c, |s, l, d| color::nv12_to_rgb(s, l, c.order(), d))
    });
}

#[test]
fn grey_to_rgb() {
    check("grey_to_rgb", |c| color_case(c, color::grey_to_rgb));
}

#[test]
fn swap_rb() {
    check("swap_rb", |c| color_case(c, color::swap_rb));
}

#[test]
fn rgb_to_grey() {
    check("rgb_to_grey", |c| {
        color_case(c, |s, l, d| color::rgb_to_grey(s, l, c.order(), d))
    });
}

#[test]
fn resize() {
    check("resize", |c| {
        let mut dst = Image::new(0, 0, 1);
        geometry::resize(
            &c.input("src").image(),
            c.usize("width"),
            c.usize("height"),
            c.interpolation(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}

fn placement(c: &Case) -> Placement {
    match c.str("placement") {
        "topleft" => Placement::TopLeft,
        "centre" => Placement::Centre,
        other => panic!("{}: placement {other}", c.name),
    }
}

#[test]
fn letterbox() {
    check("letterbox", |c| {
        let mut dst = Image::new(0, 0, 1);
        let (w, h) = (c.usize("width"), c.usize("height"));
        let lb = geometry::letterbox(
            &c.input("src").image(),
            w,
            h,
            placement(c),
            c.usize("pad") as u8,
            c.interpolation(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        let want = (
            c.usize("left"),
            c.usize("top"),
            c.usize("content_width"),
            c.usize("content_height"),
        );
        if (lb.left, lb.top, lb.width, lb.height) != want {
            return Err(format!("placement {lb:?}, expected {want:?}"));
        }
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}

/// The fused tensor path equals letterbox (or resize) followed by normalisation, bit for bit.
#[test]
fn preprocess_matches_unfused() {
    let norms = [
        Normalize {
            swap_rb: false,
            mean: [0.0; 3],
            std: [1.0; 3],
        },
        Normalize {
            swap_rb: true,
            mean: [123.675, 116.28, 103.53],
            std: [58.395, 57.12, 57.375],
        },
        Normalize {
            swap_rb: true,
            mean: [127.5; 3],
            std: [128.0; 3],
        },
    ];
    check("letterbox", |c| {
        let src = c.input("src").image();
        if src.channels != 3 {
            return Ok(());
        }
        let (w, h, interp) = (c.usize("width"), c.usize("height"), c.interpolation());
        for (fit, n) in [
            (
                Fit::Letterbox {
                    placement: placement(c),
                    pad: 114,
                },
                norms[0],
            ),
            (Fit::Stretch, norms[1]),
        ]
        .into_iter()
        .chain([
            (
                Fit::Letterbox {
                    placement: Placement::Centre,
                    pad: 0,
                },
                norms[2],
            ),
            (Fit::Height { pad: 127 }, norms[0]),
        ]) {
            let pre = Preprocess {
                width: w,
                height: h,
                fit,
                rounding: Default::default(),
                interpolation: interp,
                normalize: n,
            };
            let mut fused = vec![f32::NAN; pre.tensor_len()];
            let lb = pre.run(&src, &mut fused).map_err(|e| e.to_string())?;
            let mut img = Image::new(0, 0, 3);
            let lb2 = match fit {
                Fit::Letterbox { placement, pad } => {
                    geometry::letterbox(&src, w, h, placement, pad, interp, &mut img).unwrap()
                }
                Fit::Stretch => {
                    geometry::resize(&src, w, h, interp, &mut img).unwrap();
                    lb
                }
                // The content resized to its planned size, on a padded canvas at the left.
                Fit::Height { pad } => {
                    let mut content = Image::new(0, 0, 3);
                    geometry::resize(&src, lb.width, h, interp, &mut content).unwrap();
                    img = Image::from_vec(w, h, 3, vec![pad; w * h * 3]).unwrap();
                    for y in 0..h {
                        img.row_mut(y)[..lb.width * 3].copy_from_slice(content.row(y));
                    }
                    lb
                }
            };
            let mut unfused = vec![0.0; pre.tensor_len()];
            n.apply(&img, &mut unfused).unwrap();
            if lb != lb2 || fused != unfused {
                let diff = fused.iter().zip(&unfused).filter(|(a, b)| a != b).count();
                return Err(format!(
                    "{fit:?}: {diff} floats differ, mapping {lb:?} vs {lb2:?}"
                ));
            }
        }
        Ok(())
    });
}

fn matrix<const R: usize>(c: &Case) -> [[f64; 3]; R] {
    let v = c.numbers("m");
    std::array::from_fn(|r| [v[3 * r], v[3 * r + 1], v[3 * r + 2]])
}

#[test]
fn warp_affine() {
    check("warp_affine", |c| {
        let mut dst = Image::new(0, 0, 1);
        let m = matrix::<2>(c);
        geometry::warp_affine(
            &c.input("src").image(),
            &m,
            c.usize("width"),
            c.usize("height"),
            c.interpolation(),
            c.border(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}

#[test]
fn warp_perspective() {
    check("warp_perspective", |c| {
        let mut dst = Image::new(0, 0, 1);
        let interp = c.interpolation();
        geometry::warp_perspective(
            &c.input("src").image(),
            &matrix::<3>(c),
            c.usize("width"),
            c.usize("height"),
            interp,
            c.border(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        let how = match interp {
            Interpolation::Nearest => Match::Exact,
            _ => Match::Rounding,
        };
        compare_image(&dst, c.output("dst"), how)
    });
}

/// Relative agreement of transform coefficients.
fn compare_close(got: &[f64], want: &[f64], rel: f64) -> Result<(), String> {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    match got
        .iter()
        .zip(want)
        .find(|(g, w)| (*g - *w).abs() > rel * scale)
    {
        Some((g, w)) => Err(format!("{got:?} != {want:?} ({g} vs {w})")),
        None => Ok(()),
    }
}

#[test]
fn get_affine_transform() {
    check("get_affine_transform", |c| {
        let m = geometry::get_affine_transform(&c.points::<3>("src"), &c.points::<3>("dst"))
            .map_err(|e| e.to_string())?;
        compare_close(m.as_flattened(), &c.output("m").f64(), 1e-9)
    });
}

#[test]
fn get_perspective_transform() {
    check("get_perspective_transform", |c| {
        let m = geometry::get_perspective_transform(&c.points::<4>("src"), &c.points::<4>("dst"))
            .map_err(|e| e.to_string())?;
        compare_close(m.as_flattened(), &c.output("m").f64(), 1e-9)
    });
}

#[test]
fn collinear_points_are_singular() {
    let p = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]];
    assert_eq!(
        geometry::get_affine_transform(&p, &p),
        Err(geometry::GeometryError::Singular)
    );
}

#[test]
fn box_blur() {
    check("box_blur", |c| {
        let mut dst = Image::new(0, 0, 1);
        filter::box_blur(
            &c.input("src").image(),
            c.usize("kw"),
            c.usize("kh"),
            c.border(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}

#[test]
fn gaussian_blur() {
    check("gaussian_blur", |c| {
        let mut dst = Image::new(0, 0, 1);
        filter::gaussian_blur(
            &c.input("src").image(),
            (c.usize("kw"), c.usize("kh")),
            c.f64("sigma_x"),
            c.f64("sigma_y"),
            c.border(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}

#[test]
fn gaussian_kernel() {
    check("gaussian_kernel", |c| {
        compare_close(
            &filter::gaussian_kernel(c.usize("ksize"), c.f64("sigma")),
            &c.output("k").f64(),
            1e-12,
        )
    });
}

#[test]
fn median_blur() {
    check("median_blur", |c| {
        let mut dst = Image::new(0, 0, 1);
        filter::median_blur(&c.input("src").image(), c.usize("ksize"), &mut dst)
            .map_err(|e| e.to_string())?;
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}

fn compare_i16(got: &Image<i16>, want: &Array) -> Result<(), String> {
    let (h, w, ch) = want.hwc();
    if (got.height, got.width, got.channels) != (h, w, ch) {
        return Err(format!(
            "shape {}x{}x{} != {h}x{w}x{ch}",
            got.height, got.width, got.channels
        ));
    }
    compare(&got.data, &want.i16(), Match::Exact)
}

#[test]
fn sobel() {
    check("sobel", |c| {
        let mut dst = Image::<i16>::new(0, 0, 1);
        edges::sobel(
            &c.input("src").image(),
            c.usize("dx"),
            c.usize("dy"),
            c.usize("ksize"),
            c.border(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_i16(&dst, c.output("dst"))
    });
}

#[test]
fn scharr() {
    check("scharr", |c| {
        let mut dst = Image::<i16>::new(0, 0, 1);
        edges::scharr(
            &c.input("src").image(),
            c.usize("dx"),
            c.usize("dy"),
            c.border(),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_i16(&dst, c.output("dst"))
    });
}

#[test]
fn canny() {
    check("canny", |c| {
        let mut dst = Image::new(0, 0, 1);
        edges::canny(
            &c.input("src").image(),
            c.f64("low"),
            c.f64("high"),
            c.usize("aperture"),
            c.bool("l2"),
            &mut dst,
        )
        .map_err(|e| e.to_string())?;
        compare_image(&dst, c.output("dst"), Match::Exact)
    });
}
