//! `ocelli tail`: follow the socket and print each line for a person.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why tailing stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Nothing accepts connections at the path: start ocelli, or pass the `output.socket.path` of its
    /// config; `permission denied` means joining the socket's group (`output.socket.group`).
    #[error("cannot connect to {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    /// The connection failed while reading.
    #[error("reading from {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A line is not one ocelli writes: the path is some other program's socket.
    #[error("line {line_no} from {path} is not an ocelli line: {source}")]
    BadLine {
        path: PathBuf,
        line_no: u64,
        source: serde_json::Error,
    },
    /// The output could not be written.
    #[error("writing the output: {0}")]
    Write(io::Error),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line {
    Frame(Frame),
    Dropped {
        frames: u64,
    },
    Error {
        message: String,
    },
    Shutdown,
    /// The camera is away.
    Source {
        state: String,
        attempt: u32,
        retry_in_ms: u64,
        error: String,
    },
    /// A type added by a later schema: shown as it is.
    #[serde(other)]
    Unknown,
}

#[derive(Deserialize)]
struct Frame {
    frame_id: u64,
    timestamp_us: u64,
    width: u32,
    height: u32,
    inference: String,
    latency_us: Latency,
    detections: Vec<Det>,
    dropped_detections: u32,
    unclassified: Option<u32>,
    motion: Option<Motion>,
    source_status: Option<Source>,
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Latency {
    capture: u32,
    preprocess: u32,
    inference: u32,
    postprocess: u32,
}

#[derive(Deserialize)]
struct Det {
    label: String,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    landmarks: Option<Vec<[f32; 2]>>,
    #[serde(default)]
    classes: Vec<Class>,
}

#[derive(Deserialize)]
struct Class {
    classifier: String,
    label: String,
    score: f32,
}

#[derive(Deserialize)]
struct Motion {
    area: f32,
    regions: Vec<[f32; 4]>,
}

#[derive(Deserialize)]
struct Source {
    state: String,
    reconnects: u32,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    label: Option<String>,
}

/// Connects to the socket at `path` and prints every line it sends to `out` until the server
/// closes the connection, `max_lines` lines have been read, or `out` is closed (a broken pipe, as
/// in `ocelli tail | head`, ends quietly). Returns the number of lines read.
pub fn tail(path: &Path, out: &mut impl Write, max_lines: Option<usize>) -> Result<u64, TailError> {
    let stream = UnixStream::connect(path).map_err(|source| TailError::Connect {
        path: path.into(),
        source,
    })?;
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    let mut count = 0u64;
    while max_lines.is_none_or(|max| count < max as u64) {
        text.clear();
        let n = reader
            .read_line(&mut text)
            .map_err(|source| TailError::Read {
                path: path.into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        count += 1;
        let line = serde_json::from_str::<Line>(&text).map_err(|source| TailError::BadLine {
            path: path.into(),
            line_no: count,
            source,
        })?;
        match print(&line, text.trim_end(), out).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(TailError::Write(e)),
        }
    }
    Ok(count)
}

fn print(line: &Line, raw: &str, out: &mut impl Write) -> io::Result<()> {
    match line {
        Line::Frame(f) => print_frame(f, out),
        Line::Dropped { frames } => writeln!(
            out,
            "-- dropped {frames} frames: this client read too slowly --"
        ),
        Line::Error { message } => writeln!(out, "-- error: {message} --"),
        Line::Shutdown => writeln!(out, "-- server shut down --"),
        Line::Source {
            state,
            attempt,
            retry_in_ms,
            error,
        } => writeln!(
            out,
            "-- camera {state} (attempt {attempt}, next in {retry_in_ms} ms): {error} --"
        ),
        Line::Unknown => writeln!(out, "-- {raw} --"),
    }
}

fn print_frame(f: &Frame, out: &mut impl Write) -> io::Result<()> {
    let ms = |us: u32| f64::from(us) / 1000.0;
    let l = &f.latency_us;
    write!(
        out,
        "frame {} t={}.{:06}s {}x{} | capture {:.1} pre {:.1} infer {:.1} post {:.1} ms | ",
        f.frame_id,
        f.timestamp_us / 1_000_000,
        f.timestamp_us % 1_000_000,
        f.width,
        f.height,
        ms(l.capture),
        ms(l.preprocess),
        ms(l.inference),
        ms(l.postprocess)
    )?;
    if f.inference == "skipped" {
        write!(out, "inference skipped")?;
    } else {
        write!(out, "{} detections", f.detections.len())?;
    }
    if f.dropped_detections > 0 {
        write!(out, " (+{} over the limit)", f.dropped_detections)?;
    }
    if let Some(n @ 1..) = f.unclassified {
        write!(out, " ({n} crops over the classifiers' budget)")?;
    }
    writeln!(out)?;
    for d in &f.detections {
        let [x1, y1, x2, y2] = d.bbox;
        write!(
            out,
            "  {} {:.2} [{x1:.1} {y1:.1} {x2:.1} {y2:.1}]",
            d.label, d.score
        )?;
        if let Some(points) = &d.landmarks {
            write!(out, " landmarks")?;
            for [x, y] in points {
                write!(out, " ({x:.1} {y:.1})")?;
            }
        }
        for c in &d.classes {
            write!(out, " | {}: {} {:.2}", c.classifier, c.label, c.score)?;
        }
        writeln!(out)?;
    }
    if let Some(m) = &f.motion {
        writeln!(
            out,
            "  motion {:.2}% in {} regions",
            m.area * 100.0,
            m.regions.len()
        )?;
    }
    if let Some(s) = &f.source_status {
        writeln!(out, "  source {} ({} reconnects)", s.state, s.reconnects)?;
    }
    for e in &f.events {
        match &e.label {
            Some(label) => writeln!(out, "  event {} {label}", e.kind)?,
            None => writeln!(out, "  event {}", e.kind)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_labels_follow_their_detection() {
        let line = r#"{"schema":1,"type":"frame","frame_id":3,"timestamp_us":5,"width":384,"height":191,"inference":"ran","latency_us":{"capture":1,"preprocess":2,"inference":3,"postprocess":4},"detections":[{"class_id":0,"label":"text","score":0.858,"box":[5.1,11.3,293.9,35.2],"classes":[{"classifier":"orientation","label":"0","score":1.0}]}],"dropped_detections":0,"unclassified":4,"events":[]}"#;
        let mut out = Vec::new();
        print(&serde_json::from_str(line).unwrap(), line, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("1 detections (4 crops over the classifiers' budget)"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "  text 0.86 [5.1 11.3 293.9 35.2] | orientation: 0 1.00"
        );
    }
}
