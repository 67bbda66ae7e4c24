//! The tracker on scripted detection sequences: crossing objects, occlusion gaps, low-score
//! frames with and without ByteTrack, zones.

use ocelli::detect::{BBox, Detection, Detections, Extras};
use ocelli::emit::Event;
use ocelli::track::{Anchor, TrackConfig, Tracker, ZoneConfig};

/// A scripted detection: class, score, and a 40×80 box with its top-left corner at `(x, y)`.
#[derive(Clone, Copy)]
struct Det(u16, f32, f32, f32);

/// What the tracker said about one frame: the track id of each scripted detection (in script
/// order; `None` when untracked or dropped by a zone) and the events, as `"enter 1"`,
/// `"exit 2 door"`.
#[derive(Debug)]
struct Frame {
    ids: Vec<Option<u32>>,
    events: Vec<String>,
}

fn run(config: &TrackConfig, script: &[Vec<Det>]) -> Vec<Frame> {
    config.validate().unwrap();
    let mut tracker = Tracker::new(config);
    let mut extras = Extras::new();
    script
        .iter()
        .map(|dets| {
            let mut detections = Detections::new();
            for &Det(class_id, score, x, y) in dets {
                detections
                    .push(Detection {
                        class_id,
                        score,
                        bbox: BBox {
                            x1: x,
                            y1: y,
                            x2: x + 40.0,
                            y2: y + 80.0,
                        },
                        landmarks: None,
                    })
                    .unwrap();
            }
            extras.reset(640, 480);
            let mut events: heapless::Vec<Event, 64> = heapless::Vec::new();
            tracker.update(640, 480, &mut detections, &mut extras, &mut events);
            // Zones may drop detections: find each scripted one by its box.
            let ids = dets
                .iter()
                .map(|&Det(_, _, x, y)| {
                    let i = detections
                        .iter()
                        .position(|d| d.bbox.x1 == x && d.bbox.y1 == y)?;
                    extras.track_id(i)
                })
                .collect();
            let events = events
                .iter()
                .map(|e| match *e {
                    Event::Enter { track_id, zone, .. } => (track_id, "enter", zone),
                    Event::Exit { track_id, zone, .. } => (track_id, "exit", zone),
                    other => panic!("the tracker sent {other:?}"),
                })
                .map(|(id, kind, zone)| match zone {
                    Some(z) => format!("{kind} {id} {}", z.as_str()),
                    None => format!("{kind} {id}"),
                })
                .collect();
            Frame { ids, events }
        })
        .collect()
}

fn config(min_hits: u32, max_missed: u32, byte_track: bool) -> TrackConfig {
    TrackConfig {
        min_hits,
        max_missed,
        byte_track,
        ..TrackConfig::default()
    }
}

/// One object moving `dx, dy` per frame from `(x, y)`, with `score(frame)`; `None` skips it.
fn walk(
    n: usize,
    x: f32,
    y: f32,
    dx: f32,
    dy: f32,
    score: impl Fn(usize) -> Option<f32>,
) -> Vec<Vec<Det>> {
    (0..n)
        .map(|t| {
            score(t)
                .map(|s| Det(0, s, x + dx * t as f32, y + dy * t as f32))
                .into_iter()
                .collect()
        })
        .collect()
}

fn ids(frames: &[Frame], k: usize) -> Vec<Option<u32>> {
    frames
        .iter()
        .map(|f| f.ids.get(k).copied().flatten())
        .collect()
}

fn events(frames: &[Frame]) -> Vec<(usize, String)> {
    frames
        .iter()
        .enumerate()
        .flat_map(|(t, f)| f.events.iter().map(move |e| (t, e.clone())))
        .collect()
}

#[test]
fn crossing_objects_keep_their_ids() {
    // Two people walk towards each other along almost the same line, overlap for several
    // frames and part; each must keep its id (the prediction carries it through).
    let script: Vec<Vec<Det>> = (0..30)
        .map(|t| {
            let t = t as f32;
            vec![
                Det(0, 0.9, 100.0 + 12.0 * t, 200.0),
                Det(0, 0.85, 448.0 - 12.0 * t, 206.0),
            ]
        })
        .collect();
    let frames = run(&config(3, 5, false), &script);
    let (a, b) = (ids(&frames, 0), ids(&frames, 1));
    assert_eq!(&a[..2], [None, None], "tentative for min_hits frames");
    assert!(a[2..].iter().all(|&id| id == Some(1)), "{a:?}");
    assert!(b[2..].iter().all(|&id| id == Some(2)), "{b:?}");
    assert_eq!(
        events(&frames),
        [(2, "enter 1".into()), (2, "enter 2".into())]
    );
}

#[test]
fn occlusion_gaps_within_max_missed_keep_the_id() {
    // Frames 10..16 hidden; the object reappears where its velocity says.
    let script = walk(30, 20.0, 100.0, 8.0, 2.0, |t| {
        (!(10..16).contains(&t)).then_some(0.9)
    });
    for (max_missed, want) in [
        (10, vec![(0, "enter 1")]),
        // Gone for six frames: the track ends after three and a new one starts.
        (3, vec![(0, "enter 1"), (13, "exit 1"), (16, "enter 2")]),
    ] {
        let frames = run(&config(1, max_missed, false), &script);
        let want: Vec<(usize, String)> = want.into_iter().map(|(t, e)| (t, e.into())).collect();
        assert_eq!(events(&frames), want, "max_missed {max_missed}");
        let last = ids(&frames, 0)[29];
        assert_eq!(last, Some(if max_missed == 10 { 1 } else { 2 }));
    }
}

#[test]
fn low_score_frames_break_tracks_unless_byte_track_pairs_them() {
    // The score dips below score_threshold (0.5) for five frames: partly occluded.
    let script = walk(20, 50.0, 120.0, 6.0, 0.0, |t| {
        Some(if (8..13).contains(&t) { 0.3 } else { 0.9 })
    });
    let plain = run(&config(1, 2, false), &script);
    assert_eq!(
        events(&plain),
        [
            (0, "enter 1".into()),
            (10, "exit 1".into()),
            (13, "enter 2".into())
        ]
    );
    assert_eq!(
        ids(&plain, 0)[8],
        None,
        "low-score detections are not tracked"
    );
    let byte = run(&config(1, 2, true), &script);
    assert_eq!(events(&byte), [(0, "enter 1".into())]);
    assert!(
        ids(&byte, 0).iter().all(|&id| id == Some(1)),
        "{:?}",
        ids(&byte, 0)
    );
}

#[test]
fn byte_track_never_starts_tracks_from_low_scores() {
    let script = walk(6, 50.0, 120.0, 6.0, 0.0, |_| Some(0.3));
    let frames = run(&config(1, 2, true), &script);
    assert!(events(&frames).is_empty());
    assert!(ids(&frames, 0).iter().all(Option::is_none));
}

#[test]
fn classes_are_tracked_apart() {
    // A person and a dog in the same place: two tracks, never swapped.
    let script: Vec<Vec<Det>> = (0..5)
        .map(|_| vec![Det(0, 0.9, 100.0, 100.0), Det(16, 0.9, 102.0, 101.0)])
        .collect();
    let frames = run(&config(1, 2, false), &script);
    assert!(ids(&frames, 0).iter().all(|&id| id == Some(1)));
    assert!(ids(&frames, 1).iter().all(|&id| id == Some(2)));
}

fn door() -> ZoneConfig {
    // The bottom-centre of a box at x lies in the zone for x + 20 in 200..300.
    ZoneConfig {
        name: "door".into(),
        polygon: vec![[200.0, 0.0], [300.0, 0.0], [300.0, 480.0], [200.0, 480.0]],
    }
}

#[test]
fn zones_give_enter_and_exit_events() {
    // Bottom-centre x = 30 + 20 t: inside from t = 9 (210) to t = 13 (290), out at t = 14.
    let script = walk(20, 10.0, 100.0, 20.0, 0.0, |_| Some(0.9));
    let zoned = TrackConfig {
        zones: vec![door()],
        ..config(1, 2, false)
    };
    let frames = run(&zoned, &script);
    assert_eq!(
        events(&frames),
        [
            (0, "enter 1".into()),
            (9, "enter 1 door".into()),
            (14, "exit 1 door".into())
        ]
    );
    // The centre of the box is what counts when asked: the same, since it moves sideways.
    let centred = TrackConfig {
        anchor: Anchor::Center,
        ..zoned.clone()
    };
    assert_eq!(events(&run(&centred, &script)), events(&frames));
}

#[test]
fn a_track_that_ends_inside_a_zone_exits_it_first() {
    let script = walk(8, 200.0, 100.0, 2.0, 0.0, |t| (t < 4).then_some(0.9));
    let zoned = TrackConfig {
        zones: vec![door()],
        ..config(1, 2, false)
    };
    assert_eq!(
        events(&run(&zoned, &script)),
        [
            (0, "enter 1".into()),
            (0, "enter 1 door".into()),
            (6, "exit 1 door".into()),
            (6, "exit 1".into())
        ]
    );
}

#[test]
fn only_in_zones_drops_detections_outside() {
    let script: Vec<Vec<Det>> = (0..3)
        .map(|_| vec![Det(0, 0.9, 10.0, 100.0), Det(0, 0.9, 230.0, 100.0)])
        .collect();
    let config = TrackConfig {
        zones: vec![door()],
        only_in_zones: true,
        ..config(1, 2, false)
    };
    let frames = run(&config, &script);
    for f in &frames {
        assert_eq!(f.ids, [None, Some(1)], "the outside one is dropped");
    }
    assert_eq!(
        events(&frames),
        [(0, "enter 1".into()), (0, "enter 1 door".into())]
    );
}

#[test]
fn bad_settings_are_refused_naming_the_key() {
    let l = |polygon: Vec<[f32; 2]>| ZoneConfig {
        name: "a".into(),
        polygon,
    };
    for (config, key) in [
        (
            TrackConfig {
                score_threshold: 1.5,
                ..Default::default()
            },
            "score_threshold",
        ),
        (
            TrackConfig {
                match_iou: 0.0,
                ..Default::default()
            },
            "match_iou",
        ),
        (
            TrackConfig {
                min_hits: 0,
                ..Default::default()
            },
            "min_hits",
        ),
        (
            TrackConfig {
                only_in_zones: true,
                ..Default::default()
            },
            "only_in_zones",
        ),
        (
            TrackConfig {
                zones: vec![l(vec![[0.0, 0.0], [1.0, 1.0]])],
                ..Default::default()
            },
            "zone[0].polygon",
        ),
        (
            TrackConfig {
                zones: vec![door(), door()],
                ..Default::default()
            },
            "zone[1].name",
        ),
    ] {
        let e = config.validate().unwrap_err().to_string();
        assert!(e.starts_with(key), "{e:?} should name {key}");
    }
}
