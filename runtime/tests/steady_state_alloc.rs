//! In steady state the path after inference (decoding, NMS, mapping boxes back to the frame,
//! drawing masks, their polygons and keypoints, serialising the frame record, publishing it) allocates
//! nothing per frame.
//!
//! Its own test binary: the counting allocator is global. It counts only on the pipeline
//! thread, while it is marked, so the writer thread and the clients may allocate as they like.

mod emit_fixtures;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use emit_fixtures::Scene;
use ocelli::capture::decode_image;
use ocelli::config::{ChannelOrder, DetectorConfig, PreprocessConfig, ResizeMode};
use ocelli::detect::{DecodeConfig, Detections, Detector, Family};
use ocelli::emit::{FrameRecord, SocketConfig, SocketServer, StageLatency};
use ocelli::imgproc::Image;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    // Per thread: the tests count in parallel.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // try_with: the allocator also runs while thread-locals are torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 200;
const MEASURED: u64 = 1000;

/// Whether this runs under the emulator (cross/qemu-user.sh sets OCELLI_TEST_RUNNER).
fn emulated() -> bool {
    std::env::var_os("OCELLI_TEST_RUNNER").is_some()
}

/// The measured frames of each model's postprocessing. Under emulation, where 1200 frames of
/// every model took over four minutes, a tenth of them. The warm-up stays whole: the socket's
/// ring (64 lines) must have gone round once, each slot grown to the model's longest line
/// (128 frames of warm-up left allocations for the longest lines, masks' and keypoints').
fn model_frames_measured() -> u64 {
    if emulated() { MEASURED / 10 } else { MEASURED }
}

/// Whether `model` runs here. Under emulation its one inference costs 10-70 s, so a model
/// whose outputs have the layout of another's that this suite already puts through the same
/// decoder is left to the host: there every model runs.
fn runs_here(model: &str) -> bool {
    !(emulated() && HOST_ONLY.contains(&model))
}

/// The models left to the host, and the model whose outputs stand for theirs under emulation:
/// YOLOv8n at 640 ([1, 84, 8400], a minute's inference there) and YOLO11n ([1, 84, 2100]) go
/// through the Yolov8 decoder as arch/yolov8n_320.onnx's [1, 84, 2100] do.
const HOST_ONLY: [&str; 2] = ["yolov8n.onnx", "arch/yolo11n_320.onnx"];

/// Counts the allocations `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.get();
    COUNTING.set(true);
    f();
    COUNTING.set(false);
    ALLOCATIONS.get() - before
}

/// A fresh folder, removed with everything in it when the guard is dropped.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("ocelli-{name}-"))
        .tempdir()
        .unwrap()
}

fn cached(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/cache")
        .join(name);
    assert!(p.exists(), "{} is missing: run `just fetch`", p.display());
    p
}

/// The detector of `model` (in models/cache) as `family`, with `labels`, on BGR input.
fn detector(model: &str, family: Family, labels: &str) -> DetectorConfig {
    DetectorConfig {
        name: None,
        model: cached(model),
        sha256: None,
        family: Some(family),
        labels: labels.into(),
        input_size: None,
        preprocess: PreprocessConfig {
            channels: ChannelOrder::Bgr,
            ..Default::default()
        },
        decode: Default::default(),
    }
}

/// Real models on real photos: inference once, then postprocess + record + publish per frame.
/// Each of `configs` in steady state on `photo`, published by one socket server. The models
/// are split over several tests so that their loading, slow under emulation, runs in parallel.
fn check_all_steady(name: &str, photo: &str, configs: impl IntoIterator<Item = DetectorConfig>) {
    let dir = scratch(name);
    let server = SocketServer::bind(&SocketConfig::new(dir.path().join("s.sock"))).unwrap();
    let mut line = Vec::new();
    let mut checked = 0;
    for cfg in configs {
        let model = cfg.model.strip_prefix(cached("")).unwrap();
        if runs_here(model.to_str().unwrap()) {
            check_steady_state(&cfg, photo, &server, &mut line);
            checked += 1;
        } else {
            eprintln!("{}: left to the host under emulation", model.display());
        }
    }
    assert!(checked > 0, "{name}: no model checked");
    server.shutdown();
}

#[test]
fn detectors_postprocess_and_emit_allocate_nothing_per_frame() {
    // YuNet has twelve outputs, YOLOX one large one, NanoDet six with a GFL head.
    let models = [
        ("yunet_n_320_320.onnx", Family::Yunet, "face"),
        ("yolox_nano.onnx", Family::Yolox, "coco"),
        ("nanodet_m_320.onnx", Family::Nanodet, "coco"),
        ("ultraface_version-slim-320.onnx", Family::Ssd, "face"),
        ("yolov8n.onnx", Family::Yolov8, "coco"),
    ];
    let configs = models
        .into_iter()
        .map(|(model, family, labels)| detector(model, family, labels));
    check_all_steady("detectors-alloc", "images/astronaut.png", configs);
}

#[test]
fn text_and_semantic_masks_allocate_nothing_per_frame() {
    // DBNet's mask path: threshold, dilation, connected components, rotated rectangles.
    let mut cfg = detector("ch_PP-OCRv4_det_infer.onnx", Family::Dbnet, "text");
    cfg.input_size = Some([384, 192]);
    cfg.preprocess.resize = ResizeMode::Stretch;
    cfg.preprocess.mean = [127.5; 3];
    cfg.preprocess.std = [127.5; 3];
    cfg.decode = DecodeConfig {
        score_threshold: 0.6,
        ..Default::default()
    };
    let dbnet = cfg.clone();
    // The same probability map as a semantic map: per-class masks, cleaning, regions, each
    // region's mask drawn at the photo's resolution, RLE and polygons.
    cfg.family = Some(Family::Semantic);
    cfg.decode = DecodeConfig {
        score_threshold: 0.3,
        mask_open: 3,
        mask_close: 3,
        mask_min_area: 8,
        mask_polygons: true,
        ..Default::default()
    };
    check_all_steady("masks-alloc", "images/page.png", [dbnet, cfg]);
}

/// The Ultralytics and DETR families' detector on astronaut.png. Their random weights score
/// everything about 1e-5..2e-4 (the head's bias priors): a low threshold gives them detections
/// to decode and suppress; instance masks are cleaned and outlined.
fn random_weights(model: &str, family: Family) -> DetectorConfig {
    let mut cfg = detector(model, family, "coco");
    cfg.decode = DecodeConfig {
        score_threshold: 1e-4,
        mask_open: 3,
        mask_close: 3,
        mask_min_area: 8,
        mask_polygons: true,
        // DETR's own layout: softmax with a "no object" class.
        softmax_scores: model == "arch/detr_320.onnx",
        ..Default::default()
    };
    cfg
}

#[test]
fn ultralytics_boxes_allocate_nothing_per_frame() {
    let models = [
        ("arch/yolov8n_320.onnx", Family::Yolov8),
        ("arch/yolo11n_320.onnx", Family::Yolov8),
        ("arch/yolov10n-e2e_320.onnx", Family::Yolov10),
    ];
    let configs = models.map(|(model, family)| random_weights(model, family));
    check_all_steady("ultralytics-alloc", "images/astronaut.png", configs);
}

#[test]
fn ultralytics_masks_allocate_nothing_per_frame() {
    // Instance masks: prototype weighing, upsampling, cleaning, RLE, polygons.
    let cfg = random_weights("arch/yolov8n-seg_320.onnx", Family::Yolov8Seg);
    check_all_steady("seg-alloc", "images/astronaut.png", [cfg]);
}

#[test]
fn ultralytics_keypoints_allocate_nothing_per_frame() {
    let cfg = random_weights("arch/yolov8n-pose_320.onnx", Family::Yolov8Pose);
    check_all_steady("pose-alloc", "images/astronaut.png", [cfg]);
}

#[test]
fn detr_families_allocate_nothing_per_frame() {
    let models = [
        "arch/rtdetr_320.onnx",
        "arch/rtdetr-ul_320.onnx",
        "arch/dfine_320.onnx",
        "arch/detr_320.onnx",
    ];
    let configs = models.map(|model| random_weights(model, Family::Detr));
    check_all_steady("detr-alloc", "images/astronaut.png", configs);
}

fn check_steady_state(
    cfg: &DetectorConfig,
    photo: &str,
    server: &SocketServer,
    line: &mut Vec<u8>,
) {
    let mut image = Image::new(0, 0, 3);
    decode_image(
        &cached(photo),
        ocelli::limits::DEFAULT_MAX_PIXELS,
        &mut image,
    )
    .unwrap();
    let mut detector = Detector::load(cfg, |p| p.to_path_buf()).unwrap();
    let inferred = detector
        .infer(detector.preprocess(&image).unwrap())
        .unwrap();
    let mut detections = Detections::new();
    let mut frame = |id: u64| {
        detector.postprocess(&inferred, &mut detections).unwrap();
        let record = FrameRecord {
            frame_id: id,
            timestamp_us: id * 33_000,
            width: image.width as u32,
            height: image.height as u32,
            latency: StageLatency::default(),
            inference: Default::default(),
            detections: &detections,
            extras: Some(detector.extras()),
            dropped_detections: 0,
            labels: detector.labels.names(),
            classifiers: &[],
            unclassified: 0,
            motion: None,
            source: None,
            events: &[],
        };
        record.write_line(line);
        server.publish(line);
    };
    let measured = model_frames_measured();
    (0..WARM_UP).for_each(&mut frame);
    let allocations = allocations_in(|| (WARM_UP..WARM_UP + measured).for_each(&mut frame));
    let model = cfg.model.display();
    if matches!(
        cfg.family,
        Some(Family::Yolov8Seg | Family::Yolov8Pose | Family::Semantic)
    ) {
        assert!(
            !detections.is_empty() && detector.extras().len() == detections.len(),
            "{model}: no masks or keypoints drawn"
        );
    }
    if cfg.decode.mask_polygons {
        assert!(
            (0..detections.len()).all(|i| {
                let e = detector.extras();
                e.mask(i).is_some() == e.polygons(i).is_some()
            }),
            "{model}: masks without polygons"
        );
    }
    assert_eq!(
        allocations, 0,
        "{model}: allocations over {measured} frames after warm-up"
    );
    assert!(
        !detections.is_empty(),
        "{model}: nothing detected on {photo}"
    );
}

#[test]
fn record_and_publish_allocate_nothing_per_frame() {
    let dir = scratch("emit-alloc");
    let server = SocketServer::bind(&SocketConfig::new(dir.path().join("s.sock"))).unwrap();
    // One client reads everything, one never reads: both the steady and the dropping paths run.
    let reader = UnixStream::connect(server.path()).unwrap();
    let _stalled = UnixStream::connect(server.path()).unwrap();
    let reading =
        std::thread::spawn(move || BufReader::new(reader).lines().map_while(Result::ok).count());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.stats().clients < 2 {
        assert!(Instant::now() < deadline, "clients did not connect");
        std::thread::sleep(Duration::from_millis(1));
    }

    let scene = Scene::new();
    let mut buf = Vec::new();
    let mut publish = |i| {
        scene.record(i).write_line(&mut buf);
        server.publish(&buf);
    };
    (0..WARM_UP).for_each(&mut publish);
    let allocations = allocations_in(|| (WARM_UP..WARM_UP + MEASURED).for_each(&mut publish));

    while server.stats().dropped_frames == 0 {
        assert!(
            Instant::now() < deadline,
            "no client was dropped for: the burst did not outrun them"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let stats = server.stats();
    server.shutdown();
    let received = reading.join().unwrap();
    eprintln!("{MEASURED} frames: {allocations} allocations; {received} lines received; {stats:?}");
    assert_eq!(
        allocations, 0,
        "allocations on the publishing thread over {MEASURED} frames"
    );
}

/// Tracking, with zones that filter detections and give events, on objects that come, cross
/// and go: nothing allocated per frame once its buffers have grown.
#[test]
fn tracking_allocates_nothing_per_frame() {
    use ocelli::detect::{BBox, Detection, Extras};
    use ocelli::emit::Event;
    use ocelli::track::{TrackConfig, Tracker, ZoneConfig};
    let config = TrackConfig {
        min_hits: 2,
        max_missed: 5,
        byte_track: true,
        only_in_zones: true,
        zones: vec![ZoneConfig {
            name: "left".into(),
            polygon: vec![[0.0, 0.0], [500.0, 0.0], [500.0, 480.0], [0.0, 480.0]],
        }],
        ..TrackConfig::default()
    };
    let mut tracker = Tracker::new(&config);
    let (mut detections, mut extras) = (Detections::new(), Extras::new());
    let mut events: heapless::Vec<Event, 64> = heapless::Vec::new();
    // Frame t: twenty objects sweeping across a 640-px-wide frame at different speeds and
    // scores, each wrapping around every 64 frames.
    let mut frame = |t: u64| {
        detections.clear();
        extras.reset(640, 480);
        events.clear();
        for k in 0..20u64 {
            let x = ((t * (2 + k % 5) + 37 * k) % 640) as f32;
            let y = (k * 20) as f32;
            let score = if (t + k).is_multiple_of(7) { 0.3 } else { 0.9 };
            let bbox = BBox {
                x1: x,
                y1: y,
                x2: x + 30.0,
                y2: y + 60.0,
            };
            let d = Detection {
                class_id: (k % 3) as u16,
                score,
                bbox,
                landmarks: None,
            };
            detections.push(d).unwrap();
        }
        tracker.update(640, 480, &mut detections, &mut extras, &mut events);
    };
    for t in 0..WARM_UP {
        frame(t);
    }
    let n = allocations_in(|| {
        for t in WARM_UP..WARM_UP + MEASURED {
            frame(t);
        }
    });
    assert_eq!(n, 0, "allocations over {MEASURED} tracked frames");
}

/// The cascade after each crop's inference: ranking the classifier's output (class scores and
/// a gallery's embeddings), storing the labels with the detections and writing the record.
#[test]
fn classifier_labels_allocate_nothing_per_frame() {
    use ocelli::detect::classify::{Classifier, ClassifierConfig, TopK};
    use ocelli::detect::{BBox, Classified, Detection, Extras};
    let orientation: ClassifierConfig = toml::from_str(&format!(
        "model = {:?}\nlabels = \"text\"\ninput_size = [192, 48]\nscores = \"softmax\"\ntop_k = 1\n",
        cached("ch_ppocr_mobile_v2.0_cls_infer.onnx")
    ))
    .unwrap();
    let dir = scratch("cascade-alloc");
    let labels = dir.path().join("two.txt");
    std::fs::write(&labels, "0\n180\n").unwrap();
    let orientation = ClassifierConfig {
        labels: Some(labels.display().to_string()),
        ..orientation
    };
    let gallery = dir.path().join("gallery.json");
    std::fs::write(
        &gallery,
        r#"{"entries": [{"label": "up", "embedding": [1, 0]}, {"label": "down", "embedding": [0, 1]}]}"#,
    )
    .unwrap();
    let embedding = ClassifierConfig {
        labels: None,
        gallery: Some(gallery),
        scores: Default::default(),
        top_k: 2,
        ..orientation.clone()
    };
    let mut classifiers = [
        Classifier::load(&orientation, |p| p.into()).unwrap(),
        Classifier::load(&embedding, |p| p.into()).unwrap(),
    ];
    drop(dir);
    let det = Detection {
        class_id: 0,
        score: 0.9,
        bbox: BBox {
            x1: 10.0,
            y1: 10.0,
            x2: 200.0,
            y2: 40.0,
        },
        landmarks: None,
    };
    let detections = [det; 8];
    let names = ["orientation".to_string(), "direction".to_string()];
    let table: Vec<String> = ["text", "0", "180", "up", "down"]
        .map(String::from)
        .to_vec();
    let (mut extras, mut top, mut line) = (Extras::new(), TopK::new(), Vec::new());
    let mut frame = |i: u64| {
        extras.reset(640, 480);
        for d in 0..detections.len() {
            let raw = [(i % 7) as f32 - 3.0, d as f32 * 0.5 - 1.0];
            let mut found: heapless::Vec<Classified, 8> = heapless::Vec::new();
            for (k, c) in classifiers.iter_mut().enumerate() {
                c.rank(&raw, &mut top);
                for &(label, score) in &top {
                    let _ = found.push(Classified {
                        classifier: k as u8,
                        label: 1 + 2 * k as u16 + label,
                        score,
                    });
                }
            }
            extras.set_classes(d, found.iter().copied());
        }
        let record = FrameRecord {
            frame_id: i,
            timestamp_us: i,
            width: 640,
            height: 480,
            latency: StageLatency::default(),
            inference: ocelli::emit::Inference::Ran,
            detections: &detections,
            extras: Some(&extras),
            dropped_detections: 0,
            labels: &table,
            classifiers: &names,
            unclassified: 3,
            motion: None,
            source: None,
            events: &[],
        };
        record.write_line(&mut line);
    };
    (0..WARM_UP).for_each(&mut frame);
    let allocations = allocations_in(|| (WARM_UP..WARM_UP + MEASURED).for_each(&mut frame));
    let text = String::from_utf8_lossy(&line);
    assert!(
        text.contains(r#""classes":[{"classifier":"orientation","label":"#)
            && text.contains(r#"{"classifier":"direction","label":"up","score":"#),
        "{text}"
    );
    assert_eq!(allocations, 0, "allocations over {MEASURED} frames");
}
