//! Update bundles end to end on files: `keygen` and `bundle` write what the runtime opens and
//! stages byte for byte, and every bundle the runtime must refuse is refused with one line
//! naming the bundle and the entry. The refused bundles are crafted here entry by entry and
//! signed with the fleet key, so each reaches the check it is made for. A module of the `cli`
//! test, so that it costs no test executable of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::scratch;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ocelli::model::card::sha256_hex;
use ocelli::update::bundle::{
    Bundle, BundleError, FileEntry, Limits, MANIFEST, Manifest, SCHEMA, SIGNATURE, key_id,
    read_key_file, read_public_key,
};
use tempfile::TempDir;

fn compress(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocelli-compress"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const FRAGMENT: &str = "[[detector]]\nmodel = \"m.onnx\"\nlabels = \"labels.txt\"\n";

/// A fleet key and the files of a small bundle: a fragment, a model (any bytes will do for
/// the bundle layer), its card and labels.
struct Fleet {
    /// The key, the files and the bundles; removed with the fleet.
    dir: TempDir,
    key: PathBuf,
    files: Vec<(&'static str, Vec<u8>)>,
}

impl Fleet {
    fn new(tag: &str) -> Self {
        let dir = scratch(&format!("bundle-{tag}"));
        let key = dir.path().join("fleet.key");
        ok(compress(&["keygen".as_ref(), "--out".as_ref(), &key]));
        let model: Vec<u8> = (0..6000u32).map(|i| (i * 7 % 251) as u8).collect();
        let files = vec![
            ("fragment.toml", FRAGMENT.as_bytes().to_vec()),
            ("m.onnx", model),
            (
                "m.card.json",
                b"{\"schema\": \"ocelli-model-card/1\"}\n".to_vec(),
            ),
            ("labels.txt", b"person\ncar\n".to_vec()),
        ];
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        Fleet { dir, key, files }
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&read_key_file(&self.key).unwrap())
    }

    fn trusted(&self) -> Vec<VerifyingKey> {
        vec![read_public_key(&self.dir.path().join("fleet.key.pub")).unwrap()]
    }

    /// `ocelli-compress bundle` of every file, as `name`.
    fn bundle(&self, name: &str, version: u64) -> PathBuf {
        let out = self.dir.path().join(name);
        let v = version.to_string();
        let mut args: Vec<&Path> = vec![
            "bundle".as_ref(),
            "--key".as_ref(),
            &self.key,
            "--version".as_ref(),
            v.as_ref(),
            "--config".as_ref(),
        ];
        let paths: Vec<PathBuf> = self
            .files
            .iter()
            .map(|(n, _)| self.dir.path().join(n))
            .collect();
        args.push(&paths[0]);
        args.extend(["--out".as_ref(), out.as_path()]);
        args.extend(paths[1..].iter().map(PathBuf::as_path));
        ok(compress(&args));
        out
    }

    /// The manifest `bundle` would write for the files, signed by `key`.
    fn manifest(&self, key: &SigningKey) -> Manifest {
        Manifest {
            schema: SCHEMA.into(),
            version: 7,
            created: "2026-01-01T00:00:00Z".into(),
            signer: key_id(&key.verifying_key()),
            config: "fragment.toml".into(),
            files: self
                .files
                .iter()
                .map(|(name, bytes)| FileEntry {
                    path: (*name).into(),
                    sha256: sha256_hex(bytes),
                    bytes: bytes.len() as u64,
                })
                .collect(),
        }
    }

    /// A bundle of `manifest` signed by `key`, then `entries`; `sign` may spoil the signature.
    fn craft(
        &self,
        name: &str,
        key: &SigningKey,
        manifest: &Manifest,
        entries: &[Raw],
        sign: bool,
    ) -> PathBuf {
        let json = serde_json::to_vec_pretty(manifest).unwrap();
        let mut sig = key.verifying_key().as_bytes().to_vec();
        sig.extend_from_slice(&key.sign(&json).to_bytes());
        let out = self.dir.path().join(name);
        let mut tar = tar::Builder::new(std::fs::File::create(&out).unwrap());
        let mut head = vec![Raw::file(MANIFEST, &json)];
        if sign {
            head.push(Raw::file(SIGNATURE, &sig));
        }
        for e in head.iter().chain(entries) {
            let mut h = tar::Header::new_ustar();
            // Written raw: the tar crate's own setters refuse `..` and absolute paths.
            h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            h.set_size(e.data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(e.kind);
            if let Some(target) = e.link {
                h.set_link_name(target).unwrap();
            }
            h.set_cksum();
            tar.append(&h, &e.data[..]).unwrap();
        }
        tar.finish().unwrap();
        out
    }

    /// The payload entries, as `bundle` writes them.
    fn payload(&self) -> Vec<Raw> {
        self.files.iter().map(|(n, b)| Raw::file(n, b)).collect()
    }
}

struct Raw {
    name: String,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Option<&'static str>,
}

impl Raw {
    fn file(name: &str, data: &[u8]) -> Self {
        Raw {
            name: name.into(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
        }
    }

    fn special(name: &str, kind: tar::EntryType, link: Option<&'static str>) -> Self {
        Raw {
            name: name.into(),
            kind,
            data: Vec::new(),
            link,
        }
    }
}

fn refusal(bundle: &Path, trusted: &[VerifyingKey], limits: Limits) -> BundleError {
    match Bundle::open(bundle, trusted, limits) {
        Ok(_) => panic!("{} was accepted", bundle.display()),
        Err(e) => e,
    }
}

#[test]
fn a_bundle_opens_and_stages_byte_identical_files() {
    let fleet = Fleet::new("stage");
    let bundle = fleet.bundle("update.bundle", 3);
    let verified = Bundle::open(&bundle, &fleet.trusted(), Limits::default()).unwrap();
    let m = verified.manifest();
    assert_eq!((m.version, m.config.as_str()), (3, "fragment.toml"));
    assert_eq!(m.signer, key_id(&fleet.trusted()[0]));
    assert_eq!(verified.fragment(), FRAGMENT);
    verified.check_newer_than(2).unwrap();
    let replay = verified.check_newer_than(3).unwrap_err().to_string();
    assert_eq!(
        replay,
        format!(
            "{}: manifest.json: version 3 is not newer than the running 3",
            bundle.display()
        )
    );

    let stage = fleet.dir.path().join("staging");
    let staged = verified.stage(&stage).unwrap();
    assert_eq!(staged.config, stage.join("fragment.toml"));
    assert_eq!(staged.version, 3);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&stage).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    for (name, bytes) in &fleet.files {
        assert_eq!(&std::fs::read(stage.join(name)).unwrap(), bytes, "{name}");
    }
    let mut staged_names: Vec<_> = std::fs::read_dir(&stage)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    staged_names.sort();
    let mut expected: Vec<_> = fleet.files.iter().map(|(n, _)| n.to_string()).collect();
    expected.extend([MANIFEST.into(), SIGNATURE.into()]);
    expected.sort();
    assert_eq!(staged_names, expected);

    // A staging folder is never reused.
    let again = verified.stage(&stage).unwrap_err().to_string();
    assert!(
        again.starts_with(&format!("{}: cannot stage", stage.display())),
        "{again}"
    );

    // Inspecting: trusted with the key, reported (not refused) without it.
    let shown = Bundle::inspect(&bundle, &fleet.trusted(), Limits::default())
        .unwrap()
        .to_string();
    assert!(shown.contains("version: 3\n"), "{shown}");
    assert!(
        shown.contains("file:    m.onnx (6000 bytes, sha256 "),
        "{shown}"
    );
    assert!(shown.contains("  model = \"m.onnx\"\n"), "{shown}");
    let trusted_line = format!("signature: valid (trusted key {})\n", m.signer);
    assert!(shown.ends_with(&trusted_line), "{shown}");
    let shown = Bundle::inspect(&bundle, &[], Limits::default())
        .unwrap()
        .to_string();
    assert!(
        shown.ends_with("signature: valid, signer not among the given keys\n"),
        "{shown}"
    );
}

#[test]
fn a_bundle_changed_after_opening_is_not_staged() {
    let fleet = Fleet::new("changed");
    let bundle = fleet.bundle("update.bundle", 1);
    let verified = Bundle::open(&bundle, &fleet.trusted(), Limits::default()).unwrap();
    // Flip one byte of the model's data in place: the open file sees it.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &fleet.files[1].1[..64])
        .unwrap();
    bytes[at + 100] ^= 1;
    std::fs::write(&bundle, &bytes).unwrap();
    let stage = fleet.dir.path().join("staging");
    let e = verified.stage(&stage).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: m.onnx: sha256 ", bundle.display())),
        "{e}"
    );
    assert!(
        !stage.exists(),
        "the staging folder of a refused bundle is removed"
    );
}

#[test]
fn every_refusal_is_one_line_naming_the_bundle_and_the_entry() {
    use tar::EntryType;
    let fleet = Fleet::new("refuse");
    let key = fleet.signing_key();
    let trusted = fleet.trusted();
    let manifest = fleet.manifest(&key);
    let payload = fleet.payload();
    let with = |extra: Raw| {
        let mut entries = fleet.payload();
        entries.push(extra);
        entries
    };
    let edited = |edit: &dyn Fn(&mut Manifest)| {
        let mut m = manifest.clone();
        edit(&mut m);
        m
    };
    let craft =
        |name: &str, m: &Manifest, entries: &[Raw]| fleet.craft(name, &key, m, entries, true);

    let good = fleet.bundle("good.bundle", 1);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = fleet.dir.path().join("truncated.bundle");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let spoiled = craft("bad-signature.bundle", &manifest, &payload);
    let mut b = std::fs::read(&spoiled).unwrap();
    // Headers and data in 512-byte blocks: a byte of the signature, after the key.
    let json = serde_json::to_vec_pretty(&manifest).unwrap().len();
    b[512 + json.next_multiple_of(512) + 512 + 32 + 5] ^= 0x40;
    std::fs::write(&spoiled, &b).unwrap();
    let stranger = {
        let other = SigningKey::from_bytes(&[9; 32]);
        fleet.craft(
            "stranger.bundle",
            &other,
            &fleet.manifest(&other),
            &payload,
            true,
        )
    };
    let mut altered = fleet.payload();
    altered[1].data[10] ^= 1;
    let mut no_labels = fleet.payload();
    no_labels.pop();
    let mut twice = fleet.payload();
    twice.push(Raw::file("m.onnx", &fleet.files[1].1));
    let small = Limits {
        file_bytes: 1000,
        ..Limits::default()
    };
    let tiny = Limits {
        bundle_bytes: 4096,
        ..Limits::default()
    };
    let unlisted_config = "[[detector]]\nmodel = \"other.onnx\"\n";
    let mut other_model = fleet.payload();
    other_model[0] = Raw::file("fragment.toml", unlisted_config.as_bytes());
    let other_model_manifest = edited(&|m| {
        m.files[0].sha256 = sha256_hex(unlisted_config.as_bytes());
        m.files[0].bytes = unlisted_config.len() as u64;
    });

    let cases: Vec<(&str, PathBuf, Limits, &[&str])> = vec![
        (
            "unsigned",
            fleet.craft("unsigned.bundle", &key, &manifest, &payload, false),
            Limits::default(),
            &["manifest.sig: unsigned", "found fragment.toml"],
        ),
        (
            "bad signature",
            spoiled,
            Limits::default(),
            &["manifest.sig: signature invalid"],
        ),
        (
            "unknown key",
            stranger,
            Limits::default(),
            &["manifest.sig: signer", "is not among the trusted keys"],
        ),
        (
            "truncated",
            truncated,
            Limits::default(),
            &["m.onnx: truncated"],
        ),
        (
            "oversized file",
            good.clone(),
            small,
            &["m.onnx: 6000 bytes, over the bound of 1000"],
        ),
        (
            "oversized bundle",
            good.clone(),
            tiny,
            &["bytes, over the bundle bound of 4096"],
        ),
        (
            "wrong sha256",
            craft("altered.bundle", &manifest, &altered),
            Limits::default(),
            &["m.onnx: sha256 ", "the manifest says"],
        ),
        (
            "wrong size",
            craft(
                "size.bundle",
                &edited(&|m| m.files[1].bytes = 5999),
                &payload,
            ),
            Limits::default(),
            &["m.onnx: bytes 6000, the manifest says 5999"],
        ),
        (
            "extra file",
            craft(
                "extra.bundle",
                &manifest,
                &with(Raw::file("extra.txt", b"x")),
            ),
            Limits::default(),
            &["extra.txt: not listed in manifest.json"],
        ),
        (
            "missing file",
            craft("missing.bundle", &manifest, &no_labels),
            Limits::default(),
            &["labels.txt: listed in manifest.json but missing from the archive"],
        ),
        (
            "listed twice",
            craft("twice.bundle", &manifest, &twice),
            Limits::default(),
            &["m.onnx: a second entry of the same path"],
        ),
        (
            "traversal",
            craft(
                "traversal.bundle",
                &manifest,
                &with(Raw::file("../x", b"x")),
            ),
            Limits::default(),
            &["../x: unsafe path: contains `..`"],
        ),
        (
            "traversal inside",
            craft(
                "inside.bundle",
                &manifest,
                &with(Raw::file("a/../../x", b"x")),
            ),
            Limits::default(),
            &["a/../../x: unsafe path: contains `..`"],
        ),
        (
            "absolute",
            craft(
                "absolute.bundle",
                &manifest,
                &with(Raw::file("/etc/x", b"x")),
            ),
            Limits::default(),
            &["/etc/x: unsafe path: absolute"],
        ),
        (
            "symlink",
            craft(
                "symlink.bundle",
                &manifest,
                &with(Raw::special(
                    "evil",
                    EntryType::Symlink,
                    Some("/etc/passwd"),
                )),
            ),
            Limits::default(),
            &["evil: a symbolic link to /etc/passwd, expected a plain file"],
        ),
        (
            "hard link",
            craft(
                "hardlink.bundle",
                &manifest,
                &with(Raw::special("evil", EntryType::Link, Some("m.onnx"))),
            ),
            Limits::default(),
            &["evil: a hard link to m.onnx, expected a plain file"],
        ),
        (
            "device",
            craft(
                "device.bundle",
                &manifest,
                &with(Raw::special("null", EntryType::Char, None)),
            ),
            Limits::default(),
            &["null: a device, expected a plain file"],
        ),
        (
            "directory",
            craft(
                "dir.bundle",
                &manifest,
                &with(Raw::special("models/", EntryType::Directory, None)),
            ),
            Limits::default(),
            &["models/: a directory that holds no listed file"],
        ),
        (
            "manifest path",
            craft(
                "manifest-path.bundle",
                &edited(&|m| m.files[3].path = "../labels.txt".into()),
                &payload,
            ),
            Limits::default(),
            &["files[3].path \"../labels.txt\": unsafe path: contains `..`"],
        ),
        (
            "fragment names another file",
            craft("fragment.bundle", &other_model_manifest, &other_model),
            Limits::default(),
            &["fragment.toml: names other.onnx, which is not in the bundle"],
        ),
        (
            "not a bundle",
            {
                let p = fleet.dir.path().join("model.bundle");
                std::fs::write(&p, &fleet.files[1].1).unwrap();
                p
            },
            Limits::default(),
            &["not an update bundle"],
        ),
    ];
    for (what, bundle, limits, needles) in cases {
        let e = refusal(&bundle, &trusted, limits).to_string();
        assert_eq!(e.lines().count(), 1, "{what}: {e}");
        assert!(
            e.starts_with(&format!("{}: ", bundle.display())),
            "{what}: {e}"
        );
        for n in needles {
            assert!(e.contains(n), "{what}: {e:?} does not say {n:?}");
        }
    }
}

#[test]
fn keygen_and_bundle_refuse_with_one_line() {
    let fleet = Fleet::new("cli");
    let fail = |args: &[&Path], needles: &[&str]| {
        let out = compress(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{stderr:?} does not say {n:?}");
        }
    };
    fail(
        &["keygen".as_ref(), "--out".as_ref(), &fleet.key],
        &["fleet.key: already exists; keygen does not overwrite keys"],
    );
    let d = |n: &str| fleet.dir.path().join(n);
    let (key, frag, model, out) = (
        d("fleet.key"),
        d("fragment.toml"),
        d("m.onnx"),
        d("o.bundle"),
    );
    let base: Vec<&Path> = vec![
        "bundle".as_ref(),
        "--key".as_ref(),
        &key,
        "--version".as_ref(),
        "1".as_ref(),
        "--out".as_ref(),
        &out,
        "--config".as_ref(),
    ];
    fn then<'a>(base: &[&'a Path], rest: &[&'a Path]) -> Vec<&'a Path> {
        [base, rest].concat()
    }
    // The fragment names labels.txt, which is not given.
    fail(
        &then(&base, &[&frag, &model]),
        &["fragment.toml: names labels.txt, which is not among the files given"],
    );
    let bad = d("bad.toml");
    std::fs::write(&bad, "[[detector]]\nmodle = \"m.onnx\"\n").unwrap();
    fail(
        &then(&base, &[&bad, &model]),
        &["bad.toml: line 2: unknown field `modle`"],
    );
    fail(
        &then(&base, &[&frag, &model, &d("labels.txt"), &d("labels.txt")]),
        &["labels.txt: named labels.txt like"],
    );
    assert!(!out.exists() && !d("o.bundle.part").exists());
}
