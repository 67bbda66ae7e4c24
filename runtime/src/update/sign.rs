//! Making update bundles (docs/fleet.md): [`keygen`] writes an Ed25519 key pair, [`write`]
//! signs a config fragment and the files it names into the archive [`super::bundle`] verifies.
//! `ocelli-compress keygen` and `bundle` call them; tests make their bundles with them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::bundle::{
    FileEntry, Fragment, MANIFEST, Manifest, SCHEMA, SIGNATURE, key_id, read_key_file,
};
use crate::limits::{MAX_CONFIG_BYTES, MAX_MODEL_BYTES, read_bounded};
use crate::model::card::{sha256_hex, to_hex};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Why a key or bundle was not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A file could not be read or written: check the path, its permissions and the disk.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `keygen` never replaces a key, since bundles signed with the old one would stop being
    /// trusted: choose another `--out`, or remove the old key first.
    #[error("{path}: already exists; keygen does not overwrite keys")]
    Exists { path: PathBuf },
    /// The config fragment is not `[[detector]]` (and `[[classifier]]`) tables, or names a file
    /// that is not among the files given: fix it, or add the file.
    #[error("{path}: {reason}")]
    Fragment { path: PathBuf, reason: String },
    /// A file a bundle cannot hold: a second file of the same name, a name that is not UTF-8
    /// or too long for a tar header, or a file over the model bound.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// The signing key could not be read.
    #[error(transparent)]
    Key(#[from] super::bundle::BundleError),
}

/// Longest entry name a plain (ustar) tar header holds.
const MAX_NAME_BYTES: usize = 99;

/// Where the public key of secret key file `key` goes: `KEY.pub`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

/// Writes a new key pair: the secret key to `out` (mode 0600), the public key to `out.pub`.
pub fn keygen(out: &Path) -> Result<VerifyingKey, WriteError> {
    let public = public_path(out);
    for p in [out, &public] {
        if p.symlink_metadata().is_ok() {
            return Err(WriteError::Exists { path: p.into() });
        }
    }
    let urandom = Path::new("/dev/urandom");
    let mut secret = [0; 32];
    File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut secret))
        .map_err(|source| WriteError::Io {
            path: urandom.into(),
            source,
        })?;
    let key = SigningKey::from_bytes(&secret);
    write_new(out, 0o600, &to_hex(&secret))?;
    secret.fill(0);
    write_new(&public, 0o644, &to_hex(key.verifying_key().as_bytes()))?;
    Ok(key.verifying_key())
}

fn write_new(path: &Path, mode: u32, hex: &str) -> Result<(), WriteError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => WriteError::Exists { path: path.into() },
            _ => WriteError::Io {
                path: path.into(),
                source,
            },
        })?;
    writeln!(f, "{hex}")
        .and_then(|()| f.sync_all())
        .map_err(|source| WriteError::Io {
            path: path.into(),
            source,
        })
}

/// What `bundle` puts in a bundle.
pub struct Request<'a> {
    /// The secret key file.
    pub key: &'a Path,
    pub version: u64,
    /// The config fragment.
    pub config: &'a Path,
    /// The files the fragment names (models, cards, labels, galleries).
    pub files: &'a [PathBuf],
    pub out: &'a Path,
}

/// Writes the signed bundle `req` describes (through `OUT.part`, renamed when complete).
pub fn write(req: &Request) -> Result<Manifest, WriteError> {
    let key = SigningKey::from_bytes(&read_key_file(req.key)?);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError::Io { path, source }
    };
    let text = read_bounded(req.config, MAX_CONFIG_BYTES).map_err(io(req.config))?;
    let fragment_error = |reason: String| WriteError::Fragment {
        path: req.config.into(),
        reason,
    };
    let text = String::from_utf8(text).map_err(|e| fragment_error(format!("not UTF-8: {e}")))?;
    let fragment = Fragment::parse(&text).map_err(fragment_error)?;

    // Paths inside the bundle are the files' names, the fragment first.
    let mut sources: Vec<(String, &Path)> = Vec::new();
    for p in std::iter::once(req.config).chain(req.files.iter().map(PathBuf::as_path)) {
        let bad = |reason: String| WriteError::File {
            path: p.into(),
            reason,
        };
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("not a UTF-8 file name".into()))?;
        if name.len() > MAX_NAME_BYTES {
            return Err(bad(format!(
                "a name of {} bytes; a bundle's names hold at most {MAX_NAME_BYTES}",
                name.len()
            )));
        }
        if let Some((_, other)) = sources.iter().find(|(n, _)| n == name) {
            return Err(bad(format!(
                "named {name} like {}: paths in a bundle are the files' names",
                other.display()
            )));
        }
        sources.push((name.into(), p));
    }
    if let Some(f) = fragment
        .files()
        .into_iter()
        .find(|f| !sources.iter().any(|(n, _)| n == f))
    {
        return Err(fragment_error(format!(
            "names {f}, which is not among the files given"
        )));
    }

    let read = |p: &Path| {
        read_bounded(p, MAX_MODEL_BYTES).map_err(|source| match source.kind() {
            std::io::ErrorKind::FileTooLarge => WriteError::File {
                path: p.into(),
                reason: format!("{source}: devices refuse larger models"),
            },
            _ => io(p)(source),
        })
    };
    let mut files = Vec::with_capacity(sources.len());
    for (name, p) in &sources {
        let bytes = read(p)?;
        files.push(FileEntry {
            path: name.clone(),
            sha256: sha256_hex(&bytes),
            bytes: bytes.len() as u64,
        });
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let manifest = Manifest {
        schema: SCHEMA.into(),
        version: req.version,
        created: rfc3339(now),
        signer: key_id(&key.verifying_key()),
        config: sources[0].0.clone(),
        files,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("serialisable") + "\n";
    let mut sig = key.verifying_key().as_bytes().to_vec();
    sig.extend_from_slice(&key.sign(json.as_bytes()).to_bytes());

    let part = {
        let mut p = req.out.as_os_str().to_owned();
        p.push(".part");
        PathBuf::from(p)
    };
    let written = (|| {
        let file = File::create(&part).map_err(io(&part))?;
        let mut tar = tar::Builder::new(file);
        let mut append = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(now);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, bytes).map_err(io(&part))
        };
        append(MANIFEST, json.as_bytes())?;
        append(SIGNATURE, &sig)?;
        for ((name, p), listed) in sources.iter().zip(&manifest.files) {
            let bytes = read(p)?;
            if sha256_hex(&bytes) != listed.sha256 {
                return Err(WriteError::File {
                    path: p.to_path_buf(),
                    reason: "changed while the bundle was written".into(),
                });
            }
            append(name, &bytes)?;
        }
        let file = tar.into_inner().map_err(io(&part))?;
        file.sync_all().map_err(io(&part))?;
        std::fs::rename(&part, req.out).map_err(io(req.out))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    written.map(|()| manifest)
}

/// `secs` after the Unix epoch as an RFC 3339 UTC time (days to dates: H. Hinnant's
/// `civil_from_days`).
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_utc() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_796_400_000, "2026-12-04T16:00:00Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(super::rfc3339(secs), text);
        }
    }
}
