//! Signed update bundles: a tar archive holding `manifest.json`, `manifest.sig`, then the
//! payload (models, their cards and labels, and a config fragment of `[[detector]]` and
//! `[[classifier]]` tables whose paths are relative to the bundle). `ocelli-compress bundle`
//! writes them. [`Bundle::open`] checks the size, every entry's path and type, every digest and
//! the signature while streaming through the archive, writing nothing; [`Verified::stage`]
//! then writes the payload into a fresh staging folder, checking it all again on the way, so a
//! file changed between the two passes is refused too. Format and refusals: docs/fleet.md.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A trusted signer's key, as [`read_public_key`] reads it from `KEY.pub`.
pub use ed25519_dalek::VerifyingKey as PublicKey;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::config::DetectorConfig;
use crate::detect::classify::ClassifierConfig;
use crate::detect::labels::Labels;
use crate::limits::{MAX_BUNDLE_BYTES, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, MAX_MODEL_BYTES};
use crate::model::card::{sha256_hex, to_hex};

/// The `schema` of the manifests this version writes and reads.
pub const SCHEMA: &str = "ocelli-bundle/1";
/// The first entry: the manifest, whose exact bytes are signed.
pub const MANIFEST: &str = "manifest.json";
/// The second entry: the signer's public key (32 bytes), then the Ed25519 signature (64 bytes).
pub const SIGNATURE: &str = "manifest.sig";
pub const SIGNATURE_BYTES: u64 = 32 + 64;
/// A key file holds 64 hex digits and a newline.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// What a bundle holds, signed as its exact bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    /// Grows with every bundle of a fleet: a device refuses one not newer than its own.
    pub version: u64,
    /// When the bundle was written, RFC 3339.
    pub created: String,
    /// [`key_id`] of the key that signed it.
    pub signer: String,
    /// The config fragment's path inside the bundle; it is one of `files`.
    pub config: String,
    pub files: Vec<FileEntry>,
}

/// A payload file: its path inside the bundle, sha256 (lowercase hex) and size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The config fragment a bundle carries: the detectors and classifiers it updates.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fragment {
    #[serde(rename = "detector")]
    pub detectors: Vec<DetectorConfig>,
    #[serde(default, rename = "classifier")]
    pub classifiers: Vec<ClassifierConfig>,
}

impl Fragment {
    /// Parses `text`; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map_or(0, |s| crate::config::line_of_offset(text, s.start));
            format!("line {line}: {}", e.message().replace('\n', " "))
        })
    }

    /// The files it names, as written: models, labels files and galleries.
    pub fn files(&self) -> Vec<String> {
        let label_file = |l: &str| is_labels_file(l).then(|| l.into());
        let shown = |p: &Path| p.to_string_lossy().into_owned();
        let detectors = self
            .detectors
            .iter()
            .flat_map(|d| [Some(shown(&d.model)), label_file(&d.labels)]);
        let classifiers = self.classifiers.iter().flat_map(|c| {
            [
                Some(shown(&c.model)),
                c.labels.as_deref().and_then(label_file),
                c.gallery.as_deref().map(shown),
            ]
        });
        detectors.chain(classifiers).flatten().collect()
    }

    /// The fragment with the files it names found in `dir`: those of a staged bundle.
    pub fn rooted_at(mut self, dir: &Path) -> Self {
        let root = |p: &mut PathBuf| *p = dir.join(&*p);
        let root_labels = |l: &mut String| {
            if is_labels_file(l) {
                *l = dir.join(&*l).to_string_lossy().into_owned();
            }
        };
        for d in &mut self.detectors {
            root(&mut d.model);
            root_labels(&mut d.labels);
        }
        for c in &mut self.classifiers {
            root(&mut c.model);
            c.labels.as_mut().map(root_labels);
            c.gallery.as_mut().map(root);
        }
        self
    }
}

/// Whether a `labels` setting names a file, not a built-in set.
fn is_labels_file(labels: &str) -> bool {
    !Labels::BUILTIN.contains(&labels) && !labels.is_empty()
}

/// The bounds a bundle is read within.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub bundle_bytes: u64,
    pub manifest_bytes: u64,
    /// Each payload file (the config fragment is also held to the config bound).
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            bundle_bytes: MAX_BUNDLE_BYTES,
            manifest_bytes: MAX_MANIFEST_BYTES,
            file_bytes: MAX_MODEL_BYTES,
        }
    }
}

/// Why a bundle was refused. One line: the bundle file, the entry or field, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle or a key file could not be read: check the path and its permissions.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a tar archive whose first entry is `manifest.json`: not a file written by
    /// `ocelli-compress bundle`. Check that the right file was sent.
    #[error("{path}: not an update bundle: {reason}")]
    NotABundle { path: PathBuf, reason: String },
    /// The archive ends inside an entry: the download or copy was cut short. Fetch it again.
    #[error("{path}: {entry}: truncated: the archive ends inside it")]
    Truncated { path: PathBuf, entry: String },
    /// The bundle is larger than the bundle bound (`MAX_BUNDLE_BYTES`): split the update into
    /// several bundles.
    #[error("{path}: {bytes} bytes, over the bundle bound of {max}")]
    TooLarge { path: PathBuf, bytes: u64, max: u64 },
    /// The manifest or a payload file is over its bound (`MAX_MANIFEST_BYTES`,
    /// `MAX_MODEL_BYTES`, `MAX_CONFIG_BYTES` for the config fragment): the device would refuse
    /// the file anyway. Make it smaller.
    #[error("{path}: {entry}: {bytes} bytes, over the bound of {max}")]
    Oversized {
        path: PathBuf,
        entry: String,
        bytes: u64,
        max: u64,
    },
    /// No `manifest.sig` right after the manifest: the bundle was not signed. Write it with
    /// `ocelli-compress bundle --key`.
    #[error("{path}: {SIGNATURE}: unsigned: expected {SIGNATURE} after {MANIFEST}, found {found}")]
    Unsigned { path: PathBuf, found: String },
    /// The signature does not verify against `manifest.json` with the key beside it: the
    /// manifest was changed after signing, or the signature was damaged. Fetch the bundle again
    /// or sign it again.
    #[error("{path}: {SIGNATURE}: signature invalid: {reason}")]
    BadSignature { path: PathBuf, reason: String },
    /// A valid signature by a key the device does not trust: sign with a fleet key, or add its
    /// `KEY.pub` to the device's trusted keys.
    #[error("{path}: {SIGNATURE}: signer {signer} is not among the trusted keys")]
    Untrusted { path: PathBuf, signer: String },
    /// `manifest.json` is not a manifest of this schema, or one of its fields is wrong (named
    /// in the message). Write the bundle again with `ocelli-compress bundle`.
    #[error("{path}: {MANIFEST}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// A path that is absolute, contains `..` or `.`, is empty or not UTF-8: it could write
    /// outside the staging folder. Bundles hold only plain relative paths.
    #[error("{path}: {entry}: unsafe path: {reason}")]
    UnsafePath {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    /// An entry that is not a plain file: a symbolic or hard link, a device, a FIFO, or a
    /// directory that is not the parent of a listed file. Bundles hold plain files only.
    #[error("{path}: {entry}: {kind}, expected a plain file")]
    NotAFile {
        path: PathBuf,
        entry: String,
        kind: String,
    },
    /// A file whose sha256 or size differs from the manifest's: damaged or replaced after
    /// signing. Fetch the bundle again.
    #[error("{path}: {entry}: {field} {found}, the manifest says {expected}")]
    Mismatch {
        path: PathBuf,
        entry: String,
        field: &'static str,
        found: String,
        expected: String,
    },
    /// A file the manifest does not list, or listed twice in the archive: added after signing.
    /// Bundles hold exactly the listed files, each once.
    #[error("{path}: {entry}: {reason}")]
    Unlisted {
        path: PathBuf,
        entry: String,
        reason: &'static str,
    },
    /// A file the manifest lists is not in the archive: write the bundle again.
    #[error("{path}: {entry}: listed in {MANIFEST} but missing from the archive")]
    Missing { path: PathBuf, entry: String },
    /// The config fragment is not `[[detector]]` and `[[classifier]]` tables, or names a file
    /// that is not in the bundle: fix the fragment (docs/config.md) and write the bundle again.
    #[error("{path}: {entry}: {reason}")]
    Config {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    /// The bundle's version is not newer than the running one: an old bundle sent again (a
    /// replay). Send a bundle with a higher `--version`.
    #[error("{path}: {MANIFEST}: version {version} is not newer than the running {running}")]
    Replay {
        path: PathBuf,
        version: u64,
        running: u64,
    },
    /// The payload could not be written to the staging folder, which must not exist yet (it is
    /// created 0700): remove the old one, check the disk's space and permissions.
    #[error("{dir}: cannot stage {path}: {reason}")]
    Stage {
        path: PathBuf,
        dir: PathBuf,
        reason: String,
    },
    /// A key file that is not 32 bytes as 64 hex digits (what `ocelli-compress keygen` writes),
    /// or a public key that is not a point of the curve.
    #[error("{path}: not a key: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// The id a bundle names its signer by: the first 16 hex digits of the sha256 of its public key.
pub fn key_id(key: &VerifyingKey) -> String {
    sha256_hex(key.as_bytes())[..16].into()
}

/// Reads a key file: 32 bytes as 64 hex digits, then optional white space.
pub fn read_key_file(path: &Path) -> Result<[u8; 32], BundleError> {
    let bytes = crate::limits::read_bounded(path, MAX_KEY_FILE_BYTES).map_err(|source| {
        BundleError::Read {
            path: path.into(),
            source,
        }
    })?;
    let text = std::str::from_utf8(&bytes).unwrap_or_default().trim();
    from_hex(text).ok_or_else(|| BundleError::Key {
        path: path.into(),
        reason: format!(
            "{} character(s), expected 64 hex digits",
            text.chars().count()
        ),
    })
}

/// Reads a public key file (`KEY.pub`).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    VerifyingKey::from_bytes(&read_key_file(path)?).map_err(|e| BundleError::Key {
        path: path.into(),
        reason: e.to_string(),
    })
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// `path` as a plain relative path: names separated by single slashes, no `.` or `..`.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty");
    }
    if path.starts_with('/') {
        return Err("absolute");
    }
    if path.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    for part in path.split('/') {
        match part {
            ".." => return Err("contains `..`"),
            "." | "" => return Err("contains `.` or an empty name"),
            _ => {}
        }
    }
    Ok(())
}

/// Reading bundles.
pub struct Bundle;

impl Bundle {
    /// Opens and checks the bundle at `path`, refusing it unless it is signed by one of
    /// `trusted`. Nothing is written.
    pub fn open(
        path: &Path,
        trusted: &[VerifyingKey],
        limits: Limits,
    ) -> Result<Verified, BundleError> {
        let (file, len) = open_file(path)?;
        let scan = scan(path, &file, len, trusted, true, limits, None)?;
        Ok(Verified {
            path: path.into(),
            file,
            trusted: trusted.to_vec(),
            limits,
            scan,
        })
    }

    /// Checks the bundle at `path` as [`Bundle::open`] does, but reports a signer outside
    /// `trusted` instead of refusing it: `ocelli inspect`.
    pub fn inspect(
        path: &Path,
        trusted: &[VerifyingKey],
        limits: Limits,
    ) -> Result<Inspected, BundleError> {
        let (file, len) = open_file(path)?;
        let scan = scan(path, &file, len, trusted, false, limits, None)?;
        Ok(Inspected {
            path: path.into(),
            signer_trusted: scan.trusted,
            manifest: scan.manifest,
            fragment: scan.fragment,
        })
    }

    /// [`Bundle::open`]'s checks on `len` bytes from `reader`, named `name` in errors.
    pub fn check_reader(
        name: &Path,
        reader: impl Read,
        len: u64,
        trusted: &[VerifyingKey],
        limits: Limits,
    ) -> Result<Manifest, BundleError> {
        Ok(scan(name, reader, len, trusted, true, limits, None)?.manifest)
    }

    /// Whether `path` looks like a bundle: a `.bundle` name, or a tar header.
    pub fn looks_like(path: &Path) -> bool {
        if path.extension().is_some_and(|e| e == "bundle") {
            return true;
        }
        let mut head = [0; 262];
        File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok_and(|()| &head[257..262] == b"ustar")
    }
}

fn open_file(path: &Path) -> Result<(File, u64), BundleError> {
    let read = |source| BundleError::Read {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(read)?;
    let len = file.metadata().map_err(read)?.len();
    Ok((file, len))
}

/// A bundle whose every check passed, signed by a trusted key.
pub struct Verified {
    path: PathBuf,
    file: File,
    trusted: Vec<VerifyingKey>,
    limits: Limits,
    scan: Scan,
}

/// The payload written to a staging folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Staged {
    pub dir: PathBuf,
    /// The config fragment, inside `dir`.
    pub config: PathBuf,
    pub version: u64,
}

impl Verified {
    pub fn manifest(&self) -> &Manifest {
        &self.scan.manifest
    }

    pub fn fragment(&self) -> &str {
        &self.scan.fragment
    }

    /// Refuses the bundle ([`BundleError::Replay`]) unless it is newer than `running`.
    pub fn check_newer_than(&self, running: u64) -> Result<(), BundleError> {
        let version = self.scan.manifest.version;
        if version <= running {
            return Err(BundleError::Replay {
                path: self.path.clone(),
                version,
                running,
            });
        }
        Ok(())
    }

    /// Writes the payload, `manifest.json` and `manifest.sig` into `dir`, which is created
    /// (mode 0700) and must not exist. Every file is checked again as it is written and
    /// synced; on any refusal `dir` is removed.
    pub fn stage(&self, dir: &Path) -> Result<Staged, BundleError> {
        let failed = |what: &Path, e| stage_failed(&self.path, dir, what, e);
        DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(dir, e))?;
        let staged = (|| {
            (&self.file)
                .seek(SeekFrom::Start(0))
                .map_err(|source| BundleError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            let again = scan(
                &self.path,
                &self.file,
                self.scan.len,
                &self.trusted,
                true,
                self.limits,
                Some(dir),
            )?;
            if again.manifest_bytes != self.scan.manifest_bytes {
                return Err(BundleError::Manifest {
                    path: self.path.clone(),
                    reason: "changed since the bundle was opened".into(),
                });
            }
            for (name, bytes) in [
                (MANIFEST, &again.manifest_bytes),
                (SIGNATURE, &again.signature),
            ] {
                let p = dir.join(name);
                let mut f = create_new(&p).map_err(|e| failed(&p, e))?;
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| failed(&p, e))?;
            }
            // The new names persist only once their folders are synced, the staging folder's
            // own name with its parent.
            let mut dirs: BTreeSet<PathBuf> = again
                .manifest
                .files
                .iter()
                .filter_map(|f| dir.join(&f.path).parent().map(Path::to_path_buf))
                .collect();
            dirs.insert(dir.into());
            dirs.extend(dir.parent().map(Path::to_path_buf));
            for d in &dirs {
                File::open(d)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| failed(d, e))?;
            }
            Ok(Staged {
                dir: dir.into(),
                config: dir.join(&again.manifest.config),
                version: again.manifest.version,
            })
        })();
        if staged.is_err() {
            // Only this call created `dir`, so it holds nothing else.
            let _ = std::fs::remove_dir_all(dir);
        }
        staged
    }
}

fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

/// What `ocelli inspect` shows of a bundle.
pub struct Inspected {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Whether the signer is among the keys given.
    pub signer_trusted: bool,
    pub fragment: String,
}

impl std::fmt::Display for Inspected {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let m = &self.manifest;
        writeln!(f, "bundle:  {}", self.path.display())?;
        writeln!(f, "version: {}", m.version)?;
        writeln!(f, "created: {}", m.created)?;
        writeln!(f, "signer:  {}", m.signer)?;
        for e in &m.files {
            writeln!(
                f,
                "file:    {} ({} bytes, sha256 {})",
                e.path, e.bytes, e.sha256
            )?;
        }
        writeln!(f, "config:  {}", m.config)?;
        for line in self.fragment.lines() {
            writeln!(f, "  {line}")?;
        }
        if self.signer_trusted {
            writeln!(f, "signature: valid (trusted key {})", m.signer)
        } else {
            writeln!(f, "signature: valid, signer not among the given keys")
        }
    }
}

/// What a pass over a bundle found.
struct Scan {
    len: u64,
    manifest_bytes: Vec<u8>,
    signature: Vec<u8>,
    manifest: Manifest,
    trusted: bool,
    fragment: String,
}

/// An archive entry, read within the bundle's length.
type Entry<'a, R> = tar::Entry<'a, std::io::Take<R>>;

/// The archive's entries, with where the next header starts, to tell a cut-short archive from
/// a malformed one.
struct Entries<'a, R: Read> {
    path: &'a Path,
    len: u64,
    inner: tar::Entries<'a, std::io::Take<R>>,
    next_header: u64,
    /// Where the next header is, for messages.
    at: String,
}

impl<'a, R: Read> Entries<'a, R> {
    /// The next entry and its path (lossy UTF-8, free of control characters so that every
    /// message stays one line; the caller checks the exact bytes).
    fn next(&mut self) -> Result<Option<(Entry<'a, R>, String)>, BundleError> {
        let entry = match self.inner.next() {
            None => return Ok(None),
            Some(Ok(e)) => e,
            Some(Err(_)) if self.next_header + 512 > self.len => {
                return Err(BundleError::Truncated {
                    path: self.path.into(),
                    entry: self.at.clone(),
                });
            }
            Some(Err(e)) => {
                return Err(BundleError::NotABundle {
                    path: self.path.into(),
                    reason: format!("{}: {}", self.at, e.to_string().escape_debug()),
                });
            }
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name.chars().any(char::is_control) {
            return Err(BundleError::UnsafePath {
                path: self.path.into(),
                entry: name.escape_debug().to_string(),
                reason: "contains a control character".into(),
            });
        }
        let end = entry.raw_file_position().saturating_add(entry.size());
        if end > self.len {
            return Err(BundleError::Truncated {
                path: self.path.into(),
                entry: name,
            });
        }
        self.next_header = end.next_multiple_of(512);
        self.at = format!("the header after {name}");
        Ok(Some((entry, name)))
    }
}

/// One pass over a bundle of `len` bytes: bounds, entries, digests and signature checked,
/// each payload file also written under `out` when given.
fn scan(
    path: &Path,
    reader: impl Read,
    len: u64,
    trusted: &[VerifyingKey],
    require_trust: bool,
    limits: Limits,
    out: Option<&Path>,
) -> Result<Scan, BundleError> {
    if len > limits.bundle_bytes {
        return Err(BundleError::TooLarge {
            path: path.into(),
            bytes: len,
            max: limits.bundle_bytes,
        });
    }
    if len < 512 {
        return Err(BundleError::NotABundle {
            path: path.into(),
            reason: format!("{len} bytes, shorter than a tar header"),
        });
    }
    let read_err = |source| BundleError::Read {
        path: path.into(),
        source,
    };
    let mut archive = tar::Archive::new(reader.take(len));
    // Raw: GNU long names and pax headers are refused as entries, not interpreted, so no
    // path or size can differ between what is checked and what another reader would see.
    let mut entries = Entries {
        path,
        len,
        inner: archive.entries().map_err(read_err)?.raw(true),
        next_header: 0,
        at: "the first header".into(),
    };
    let oversized = |entry: &str, bytes, max| BundleError::Oversized {
        path: path.into(),
        entry: entry.into(),
        bytes,
        max,
    };

    let Some((mut first, name)) = entries.next()? else {
        return Err(BundleError::NotABundle {
            path: path.into(),
            reason: "an empty archive".into(),
        });
    };
    if name != MANIFEST || !first.header().entry_type().is_file() {
        return Err(BundleError::NotABundle {
            path: path.into(),
            reason: format!("the first entry is {name}, expected {MANIFEST}"),
        });
    }
    if first.size() > limits.manifest_bytes {
        return Err(oversized(MANIFEST, first.size(), limits.manifest_bytes));
    }
    let manifest_bytes = read_entry(path, &mut first, MANIFEST)?;
    drop(first);

    let (mut sig, name) = match entries.next()? {
        Some((e, name)) if name == SIGNATURE => (e, name),
        other => {
            return Err(BundleError::Unsigned {
                path: path.into(),
                found: other.map_or("the end of the archive".into(), |(_, n)| n),
            });
        }
    };
    let bad_signature = |reason: String| BundleError::BadSignature {
        path: path.into(),
        reason,
    };
    if !sig.header().entry_type().is_file() || sig.size() != SIGNATURE_BYTES {
        return Err(bad_signature(format!(
            "{} bytes of type {:?}, expected a file of {SIGNATURE_BYTES} bytes",
            sig.size(),
            sig.header().entry_type()
        )));
    }
    let signature = read_entry(path, &mut sig, &name)?;
    drop(sig);
    let (key, sig) = signature.split_at(32);
    let key = VerifyingKey::from_bytes(key.try_into().expect("32 bytes"))
        .map_err(|e| bad_signature(format!("the public key: {e}")))?;
    let sig = Signature::from_bytes(sig.try_into().expect("64 bytes"));
    key.verify_strict(&manifest_bytes, &sig).map_err(|_| {
        bad_signature(format!(
            "does not verify {MANIFEST} with key {}",
            key_id(&key)
        ))
    })?;
    // Parsed only once signed: the JSON reader sees nothing an outsider wrote.
    let manifest = check_manifest(path, &manifest_bytes, limits)?;
    if manifest.signer != key_id(&key) {
        return Err(bad_signature(format!(
            "signed by key {}, but signer is {}",
            key_id(&key),
            manifest.signer
        )));
    }
    let signer_trusted = trusted.iter().any(|t| t.as_bytes() == key.as_bytes());
    if require_trust && !signer_trusted {
        return Err(BundleError::Untrusted {
            path: path.into(),
            signer: manifest.signer,
        });
    }

    let listed: BTreeMap<&str, &FileEntry> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut seen = BTreeSet::new();
    let mut fragment = None;
    let mut buf = vec![0; 64 << 10];
    while let Some((mut entry, name)) = entries.next()? {
        let unsafe_path = |reason: &str| BundleError::UnsafePath {
            path: path.into(),
            entry: name.clone(),
            reason: reason.into(),
        };
        let not_a_file = |kind: String| BundleError::NotAFile {
            path: path.into(),
            entry: name.clone(),
            kind,
        };
        if std::str::from_utf8(&entry.path_bytes()).is_err() {
            return Err(unsafe_path("not UTF-8"));
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            let dir = name.strip_suffix('/').unwrap_or(&name);
            check_path(dir).map_err(unsafe_path)?;
            let parent = |f: &&str| f.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
            if !listed.keys().any(parent) {
                return Err(not_a_file("a directory that holds no listed file".into()));
            }
            continue;
        }
        check_path(&name).map_err(unsafe_path)?;
        if !kind.is_file() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned());
            return Err(not_a_file(match (kind, target) {
                (k, Some(t)) if k.is_symlink() => format!("a symbolic link to {t}"),
                (k, Some(t)) if k.is_hard_link() => format!("a hard link to {t}"),
                (k, _) if k.is_character_special() || k.is_block_special() => "a device".into(),
                (k, _) if k.is_fifo() => "a FIFO".into(),
                (k, _) => format!("a tar entry of type {:?}", k.as_byte() as char),
            }));
        }
        let unlisted = |reason| BundleError::Unlisted {
            path: path.into(),
            entry: name.clone(),
            reason,
        };
        let Some(&file) = listed.get(name.as_str()) else {
            return Err(unlisted("not listed in manifest.json"));
        };
        if !seen.insert(file.path.as_str()) {
            return Err(unlisted("a second entry of the same path"));
        }
        let size = entry.size();
        let is_config = name == manifest.config;
        let max = if is_config {
            MAX_CONFIG_BYTES.min(limits.file_bytes)
        } else {
            limits.file_bytes
        };
        if size > max {
            return Err(oversized(&name, size, max));
        }
        let mismatch = |field, found: String, expected: String| BundleError::Mismatch {
            path: path.into(),
            entry: name.clone(),
            field,
            found,
            expected,
        };
        if size != file.bytes {
            return Err(mismatch("bytes", size.to_string(), file.bytes.to_string()));
        }
        let mut sink = out
            .map(|dir| create_in(path, dir, &name).map(|(f, p)| (f, p, dir)))
            .transpose()?;
        let mut hash = Sha256::new();
        let mut text = Vec::new();
        let mut got = 0;
        loop {
            let n = entry.read(&mut buf).map_err(read_err)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            if is_config {
                text.extend_from_slice(&buf[..n]);
            }
            if let Some((f, p, dir)) = &mut sink {
                f.write_all(&buf[..n])
                    .map_err(|e| stage_failed(path, dir, p, e))?;
            }
            got += n as u64;
        }
        if got < size {
            return Err(BundleError::Truncated {
                path: path.into(),
                entry: name,
            });
        }
        let sha256 = to_hex(&hash.finalize());
        if sha256 != file.sha256 {
            return Err(mismatch("sha256", sha256, file.sha256.clone()));
        }
        if let Some((f, p, dir)) = &sink {
            f.sync_all().map_err(|e| stage_failed(path, dir, p, e))?;
        }
        if is_config {
            fragment = Some(check_fragment(path, &name, text, &listed)?);
        }
    }
    if let Some(missing) = listed.keys().find(|p| !seen.contains(*p)) {
        return Err(BundleError::Missing {
            path: path.into(),
            entry: (*missing).into(),
        });
    }
    Ok(Scan {
        len,
        manifest_bytes,
        signature,
        trusted: signer_trusted,
        // The config is listed (check_manifest) and every listed file was seen.
        fragment: fragment.expect("the config fragment was read"),
        manifest,
    })
}

/// An entry's bytes, which its header bounds (`size`).
fn read_entry<R: Read>(
    path: &Path,
    entry: &mut tar::Entry<R>,
    name: &str,
) -> Result<Vec<u8>, BundleError> {
    let size = entry.size();
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|source| BundleError::Read {
            path: path.into(),
            source,
        })?;
    if (bytes.len() as u64) < size {
        return Err(BundleError::Truncated {
            path: path.into(),
            entry: name.into(),
        });
    }
    Ok(bytes)
}

/// Creates `name` under the staging folder `dir`, with its parent folders (0700): `name` is a
/// checked plain relative path and `dir` was created empty, so nothing outside it is reached.
fn create_in(path: &Path, dir: &Path, name: &str) -> Result<(File, PathBuf), BundleError> {
    let p = dir.join(name);
    let failed = |e| stage_failed(path, dir, &p, e);
    if let Some(parent) = p.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(failed)?;
    }
    Ok((create_new(&p).map_err(failed)?, p))
}

fn stage_failed(path: &Path, dir: &Path, file: &Path, e: std::io::Error) -> BundleError {
    BundleError::Stage {
        path: path.into(),
        dir: dir.into(),
        reason: format!("{}: {e}", file.display()),
    }
}

/// Parses the signed manifest and checks its fields: schema, paths, digests, sizes.
fn check_manifest(path: &Path, bytes: &[u8], limits: Limits) -> Result<Manifest, BundleError> {
    let bad = |reason: String| BundleError::Manifest {
        path: path.into(),
        reason,
    };
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if m.schema != SCHEMA {
        return Err(bad(format!("schema: {:?}, expected {SCHEMA:?}", m.schema)));
    }
    let mut paths = BTreeSet::new();
    for (i, f) in m.files.iter().enumerate() {
        check_path(&f.path).map_err(|reason| BundleError::UnsafePath {
            path: path.into(),
            entry: format!("{MANIFEST} files[{i}].path {:?}", f.path),
            reason: reason.into(),
        })?;
        if f.path == MANIFEST || f.path == SIGNATURE || !paths.insert(f.path.as_str()) {
            return Err(bad(format!(
                "files[{i}].path: {:?} is listed twice or is the manifest's own name",
                f.path
            )));
        }
        if f.sha256.len() != 64
            || !f
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(bad(format!(
                "files[{i}].sha256: {:?}, expected 64 lowercase hex digits",
                f.sha256
            )));
        }
        if f.bytes > limits.file_bytes {
            return Err(BundleError::Oversized {
                path: path.into(),
                entry: f.path.clone(),
                bytes: f.bytes,
                max: limits.file_bytes,
            });
        }
    }
    if !paths.contains(m.config.as_str()) {
        return Err(bad(format!("config: {:?} is not among files", m.config)));
    }
    Ok(m)
}

/// The config fragment's text, once it parses and names only files of the bundle.
fn check_fragment(
    path: &Path,
    name: &str,
    text: Vec<u8>,
    listed: &BTreeMap<&str, &FileEntry>,
) -> Result<String, BundleError> {
    let bad = |reason: String| BundleError::Config {
        path: path.into(),
        entry: name.into(),
        reason,
    };
    let text = String::from_utf8(text).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let fragment = Fragment::parse(&text).map_err(&bad)?;
    if let Some(f) = fragment
        .files()
        .iter()
        .find(|f| !listed.contains_key(f.as_str()))
    {
        return Err(bad(format!("names {f}, which is not in the bundle")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::{Fragment, check_path};

    #[test]
    fn only_plain_relative_paths_pass() {
        for ok in ["m.onnx", "models/m.onnx", "a..b"] {
            assert_eq!(check_path(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "", "/m", "../m", "a/../m", "a/..", "./m", "a//m", "a/", "a\nb",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_fragment_names_its_models_labels_files_and_galleries() {
        let f = Fragment::parse(
            "[[detector]]\nmodel = \"d.onnx\"\n\n[[detector]]\nmodel = \"e.onnx\"\n\
             labels = \"e.txt\"\n\n[[classifier]]\nmodel = \"c.onnx\"\nlabels = \"face\"\n\n\
             [[classifier]]\nmodel = \"g.onnx\"\ngallery = \"g.json\"\n",
        )
        .unwrap();
        let named = ["d.onnx", "e.onnx", "e.txt", "c.onnx", "g.onnx", "g.json"];
        assert_eq!(f.files(), named);
        let e = Fragment::parse("[[detector]]\nmodle = \"d.onnx\"\n").unwrap_err();
        assert!(e.starts_with("line 2: unknown field `modle`"), "{e}");
        let e = Fragment::parse("[[classifier]]\nmodel = \"c.onnx\"\n").unwrap_err();
        assert!(e.contains("missing field `detector`"), "{e}");
    }
}
