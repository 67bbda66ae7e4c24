//! Class labels: the names behind a detector's class ids.

use std::path::{Path, PathBuf};

/// Why a labels file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file could not be read, or is over 1 MiB: check `detector.labels` and the file's
    /// permissions.
    #[error("cannot read labels file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line is not UTF-8 text: save the file as UTF-8.
    #[error("{}:{line}: not UTF-8 text", path.display())]
    Encoding { path: PathBuf, line: usize },
    /// A blank line before the last label would shift every later class id: remove it, or
    /// name the unused class.
    #[error("{}:{line}: empty label (line numbers are class ids + 1, so blank lines are not allowed)", path.display())]
    Blank { path: PathBuf, line: usize },
    /// Two classes share a name, so thresholds by label would be ambiguous: rename one.
    #[error("{}:{line}: label `{label}` already given on line {first}", path.display())]
    Duplicate {
        path: PathBuf,
        line: usize,
        first: usize,
        label: String,
    },
    /// The file has no labels at all.
    #[error("{}: no labels", path.display())]
    Empty { path: PathBuf },
}

const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Class names, indexed by class id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels(Vec<String>);

impl Labels {
    /// The sets a config names instead of a file (`labels = "coco"`).
    pub const BUILTIN: [&str; 3] = ["coco", "face", "text"];

    /// The 80 COCO classes, in the order COCO-trained detectors score them.
    pub fn coco() -> Self {
        Self(COCO.iter().map(|s| s.to_string()).collect())
    }

    /// The single class of face detectors.
    pub fn faces() -> Self {
        Self(vec!["face".into()])
    }

    /// The single class of text detectors.
    pub fn text() -> Self {
        Self(vec!["text".into()])
    }

    /// The labels a config names: a [`BUILTIN`](Self::BUILTIN) set, or a file (resolved by
    /// `resolve`) read by [`from_file`](Self::from_file).
    pub fn named(name: &str, resolve: impl Fn(&Path) -> PathBuf) -> Result<Self, LabelsError> {
        Ok(match name {
            "coco" => Self::coco(),
            "face" => Self::faces(),
            "text" => Self::text(),
            file => Self::from_file(&resolve(Path::new(file)))?,
        })
    }

    /// Reads a text file with one label per line; line `n` names class `n - 1`. Trailing
    /// blank lines and surrounding whitespace are ignored.
    pub fn from_file(path: &Path) -> Result<Self, LabelsError> {
        let bytes = crate::limits::read_bounded(path, crate::limits::MAX_LABELS_BYTES).map_err(
            |source| LabelsError::Read {
                path: path.into(),
                source,
            },
        )?;
        let mut names: Vec<String> = Vec::new();
        let mut blank = None;
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let text = std::str::from_utf8(raw).map_err(|_| LabelsError::Encoding {
                path: path.into(),
                line,
            })?;
            let label = text.trim();
            if label.is_empty() {
                blank.get_or_insert(line);
                continue;
            }
            if let Some(line) = blank {
                return Err(LabelsError::Blank {
                    path: path.into(),
                    line,
                });
            }
            if let Some(first) = names.iter().position(|n| n == label) {
                return Err(LabelsError::Duplicate {
                    path: path.into(),
                    line,
                    first: first + 1,
                    label: label.into(),
                });
            }
            names.push(label.into());
        }
        if names.is_empty() {
            return Err(LabelsError::Empty { path: path.into() });
        }
        Ok(Self(names))
    }

    /// The name of class `id`, or `"unknown"` when the labels do not reach that far.
    pub fn name(&self, id: u16) -> &str {
        self.0
            .get(usize::from(id))
            .map_or("unknown", String::as_str)
    }

    /// The class id named `label`.
    pub fn id(&self, label: &str) -> Option<u16> {
        self.0
            .iter()
            .position(|n| n == label)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Every name, indexed by class id.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &[u8]) -> Result<Labels, LabelsError> {
        let path =
            std::env::temp_dir().join(format!("ocelli-labels-{}-{name}.txt", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let labels = Labels::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        labels
    }

    #[test]
    fn builtin_sets() {
        let coco = Labels::coco();
        assert_eq!(
            (coco.len(), coco.name(0), coco.name(41), coco.name(79)),
            (80, "person", "cup", "toothbrush")
        );
        assert_eq!(coco.id("cat"), Some(15));
        assert_eq!(coco.name(80), "unknown");
        assert_eq!(Labels::faces().name(0), "face");
        assert_eq!(Labels::text().names(), ["text"]);
    }

    #[test]
    fn file_reads_one_label_per_line() {
        let l = parse("ok", b"  red light\r\ngreen light\n\n\n").unwrap();
        assert_eq!(
            (l.len(), l.name(0), l.name(1)),
            (2, "red light", "green light")
        );
    }

    #[test]
    fn file_errors_name_file_and_line() {
        let cases: [(&str, &[u8], &str); 4] = [
            ("blank", b"a\n\nb\n", ":2: empty label"),
            ("dup", b"a\nb\na\n", ":3: label `a` already given on line 1"),
            ("utf8", b"a\n\xff\n", ":2: not UTF-8"),
            ("empty", b"\n \n", ": no labels"),
        ];
        for (name, text, want) in cases {
            let msg = parse(name, text).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("ocelli-labels-{}-{name}.txt", std::process::id())),
                "{msg}"
            );
            assert!(msg.contains(want), "{name}: {msg}");
        }
        let missing = Labels::from_file(Path::new("/nonexistent/labels.txt"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/labels.txt"), "{missing}");
    }
}
