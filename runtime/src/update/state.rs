//! The device's side of an update: the state folder, the steps of an update, the health check
//! and what a restart finds after a crash at any step.
//!
//! The state folder holds `current` (a link to the folder of the bundle that runs), `trial` (a
//! link to a bundle swapped in whose health check has not passed), staged bundles `vN`,
//! `vN.staging` while a bundle is written, `incoming/` for bundles from the broker and
//! `status.json`. Only a passed health check renames `trial` over `current` (one atomic
//! rename), so a restart after a crash at any step runs `current`: the old version, complete.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::UpdateConfig;
use super::bundle::{Bundle, Fragment, Limits, Manifest, PublicKey, read_public_key};
use super::inbox::{Delivery, Inbox, hold};
use crate::config::{Config, ConfigError};
use crate::limits::{MAX_CONFIG_BYTES, read_bounded};
use crate::model::card::sha256_hex;

/// What the status topic and `status.json` hold.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub schema: &'static str,
    pub device: String,
    pub time: String,
    pub running: Running,
    /// The last update: its step, or how it ended and why.
    pub update: Option<Attempt>,
}

/// The version that runs: 0 for the config's own detectors.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Running {
    pub version: u64,
    /// sha256 of the bundle's `manifest.json`, which lists every file's.
    pub manifest_sha256: Option<String>,
    pub models: Vec<ModelHash>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelHash {
    pub path: String,
    pub sha256: String,
}

/// An update in progress or done.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub version: Option<u64>,
    /// Where it came from: a topic or a file.
    pub from: String,
    /// received, verified, staged, swapped, health-check, done.
    pub step: &'static str,
    /// in-progress, applied, refused, rolled-back or interrupted.
    pub outcome: &'static str,
    pub reason: Option<String>,
}

/// What the health check says after a frame.
pub enum Health {
    /// No update on trial, or its check is not over.
    Pending,
    /// The update failed its check: the pipeline runs this config again.
    RollBack(Box<Config>),
}

/// A bundle swapped in, on trial.
struct Trial {
    version: u64,
    dir: PathBuf,
    previous: Config,
    previous_running: Running,
    /// Median inference time before the swap, µs.
    baseline: Option<u32>,
    times: Vec<u32>,
    started: Instant,
}

/// Takes bundles from the watched folder and the broker and carries them through their steps.
pub struct Updater {
    config: UpdateConfig,
    dir: PathBuf,
    watch: Option<PathBuf>,
    trusted: Vec<PublicKey>,
    limits: Limits,
    inbox: Option<Inbox>,
    /// The config as its file says, before any bundle's fragment.
    base: Config,
    /// The staged bundle that runs (`current`), and its fragment.
    current: Option<(PathBuf, Manifest)>,
    /// Bundles of this version or older are refused as replays: the newest that was current,
    /// even when it no longer runs.
    floor: u64,
    opened: Instant,
    status: Status,
    /// Inference times of the latest frames, for the baseline.
    times: VecDeque<u32>,
    trial: Option<Trial>,
    next_poll: Instant,
}

/// How often the watched folder is listed.
const POLL: Duration = Duration::from_millis(250);
/// How long a file in the watched folder must be left unchanged before it is taken.
const SETTLED: Duration = Duration::from_secs(1);
/// How long a bundle may take to run its health check's frames.
const TRIAL_LIMIT: Duration = Duration::from_secs(600);
/// How long after the start a bundle waits for frames to measure the running version by.
const BASELINE_WAIT: Duration = Duration::from_secs(60);

/// Why the updater could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The state folder could not be made or read: check `update.state_dir`, its permissions
    /// and the disk.
    #[error("update.state_dir: {path}: {source}")]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A trusted key file is missing or not a public key from `ocelli-compress keygen`.
    #[error("update.trusted_keys: {0}")]
    Key(#[from] super::bundle::BundleError),
    /// `update.mqtt` needs the broker of `[output.mqtt]`.
    #[error("update.mqtt: {0}")]
    Mqtt(String),
    /// The config reloaded no longer fits the running bundle's fragment; the running config
    /// is kept. Fix the config, or send a bundle that fits it.
    #[error("update: the running bundle with the reloaded config: {0}")]
    Fragment(String),
}

impl Updater {
    /// Opens the state folder, finishes what a crash left (an interrupted update is dropped and
    /// reported), and returns the updater with the config to run: `base` with the fragment of
    /// the bundle in `current`, if any.
    pub fn open(base: Config) -> Result<(Self, Config), UpdateError> {
        let config = base.update.clone().expect("an [update] table");
        let absolute = |p: &Path| std::path::absolute(base.resolve(p)).unwrap_or(base.resolve(p));
        let dir = match &config.state_dir {
            Some(d) => absolute(d),
            None => crate::config::state_directory().join("updates"),
        };
        let state = |path: &Path| {
            let path = path.to_path_buf();
            move |source| UpdateError::State { path, source }
        };
        let incoming = dir.join("incoming");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&incoming)
                .map_err(state(&incoming))?;
        }
        let trusted = config
            .trusted_keys
            .iter()
            .map(|k| read_public_key(&base.resolve(k)))
            .collect::<Result<Vec<_>, _>>()?;
        let device = match &base.output.mqtt {
            Some(m) => crate::emit::mqtt::device_name(m).unwrap_or_default(),
            None => crate::emit::mqtt::hostname(),
        };
        let last = std::fs::read(dir.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
        let mut updater = Self {
            limits: Limits {
                bundle_bytes: config.max_bundle_bytes(),
                ..Limits::default()
            },
            times: VecDeque::with_capacity(config.health_frames as usize),
            watch: config.watch_dir.as_deref().map(absolute),
            config,
            dir,
            trusted,
            inbox: None,
            base: base.clone(),
            current: None,
            floor: 0,
            opened: Instant::now(),
            status: Status {
                schema: "ocelli-update-status/1",
                device,
                time: String::new(),
                running: Running::default(),
                update: None,
            },
            trial: None,
            next_poll: Instant::now(),
        };
        // Before the broker can deliver anything into `incoming/`.
        let interrupted = updater.recover();
        if updater.config.mqtt {
            let Some(m) = &base.output.mqtt else {
                return Err(UpdateError::Mqtt(
                    "mqtt = true needs an [output.mqtt] broker".into(),
                ));
            };
            let max = updater.config.max_bundle_bytes() as usize;
            let inbox = Inbox::start(m, |p| base.resolve(p), &incoming, max)
                .map_err(|e| UpdateError::Mqtt(e.to_string()))?;
            updater.inbox = Some(inbox);
        }
        updater.status.update = interrupted.or_else(|| updater.last_attempt(last));
        let running = match updater.current_config() {
            Ok(c) => c,
            Err(e) => updater.fall_back(format!("the bundle does not fit the config: {e}")),
        };
        updater.status.running = updater.running(&running);
        updater.report();
        Ok((updater, running))
    }

    /// What the last run reported of its last update; one cut short mid-step is interrupted,
    /// unless what it was applying runs.
    fn last_attempt(&self, last: Option<serde_json::Value>) -> Option<Attempt> {
        let u = last?.get("update")?.clone();
        let version = u.get("version")?.as_u64();
        let runs = version.is_some() && version == self.current.as_ref().map(|(_, m)| m.version);
        Some(Attempt {
            version,
            from: u.get("from")?.as_str()?.into(),
            step: "done",
            outcome: match u.get("outcome")?.as_str()? {
                "applied" => "applied",
                "refused" => "refused",
                "rolled-back" => "rolled-back",
                _ if runs => "applied",
                _ => "interrupted",
            },
            reason: u.get("reason")?.as_str().map(String::from),
        })
    }

    /// The bundle in `current` cannot run (it does not fit the config, or its models do not
    /// load): reported, and the config's own detectors run. Its version stays the replay floor.
    pub fn fall_back(&mut self, reason: String) -> Config {
        let version = self.current.take().map(|(_, m)| m.version);
        let reason = format!("{reason}; running the config's own detectors");
        self.status.running = self.running(&self.base);
        self.step(version, "current", "done", "rolled-back", Some(reason));
        self.base.clone()
    }

    /// Whether a bundle's fragment runs.
    pub fn runs_bundle(&self) -> bool {
        self.current.is_some()
    }

    /// Removes what an update cut short left, keeping `current`; returns what was cut short.
    /// Best effort: what cannot be removed is logged, and the service starts anyway.
    fn recover(&mut self) -> Option<Attempt> {
        let mut cut: Option<Attempt> = None;
        let mut interrupted = |step: &'static str, version: Option<u64>, from: &str| {
            cut = Some(Attempt {
                version,
                from: from.into(),
                step,
                outcome: "interrupted",
                reason: Some(format!(
                    "the service stopped during {step}; the version that ran before it runs"
                )),
            })
        };
        let remove = |path: &Path| {
            let removed = match path.is_dir() && !path.is_symlink() {
                true => std::fs::remove_dir_all(path),
                false => std::fs::remove_file(path),
            };
            if let Err(e) = removed {
                eprintln!("ocelli: update: cannot remove {}: {e}", path.display());
            }
        };
        for path in entries(&self.dir.join("incoming")) {
            match path.extension().and_then(|e| e.to_str()) {
                Some("part") => interrupted("download", None, &path.display().to_string()),
                Some("bundle") => interrupted("verified", None, &path.display().to_string()),
                _ => continue,
            }
            remove(&path);
        }
        let trial = self.dir.join("trial");
        if let Ok(target) = std::fs::read_link(&trial) {
            interrupted("swap or health-check", version_of(&target), "trial");
            remove(&trial);
        }
        let link = self.dir.join("current");
        if let Ok(target) = std::fs::read_link(&link) {
            self.floor = version_of(&target).unwrap_or(0);
            let manifest = std::fs::read(self.dir.join(&target).join(super::bundle::MANIFEST))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).map_err(|e| e.to_string()));
            match manifest {
                Ok(m) => {
                    self.floor = self.floor.max(m.version);
                    self.current = Some((self.dir.join(&target), m));
                }
                Err(e) => {
                    eprintln!(
                        "ocelli: update: {}: {e}; running the config's own detectors",
                        link.display()
                    );
                    remove(&link);
                }
            }
        }
        let current = self.current.as_ref().map(|(d, _)| d.clone());
        for path in entries(&self.dir) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let (digits, staging) = match name.strip_suffix(".staging") {
                Some(n) => (n, true),
                None => (name, false),
            };
            let ours = digits
                .strip_prefix('v')
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            if !ours || Some(&path) == current.as_ref() {
                continue;
            }
            if staging {
                interrupted("staging", digits[1..].parse().ok(), name);
            }
            remove(&path);
        }
        let _ = sync_dir(&self.dir);
        cut
    }

    /// `base` with the running bundle's fragment: the config a SIGHUP reloads. The base is
    /// kept only once [`Updater::reloaded`] says the reload applied.
    pub fn merge(&self, base: &Config) -> Result<Config, String> {
        match &self.current {
            Some((dir, manifest)) => bundle_config(base, dir, &dir.join(&manifest.config)),
            None => Ok(base.clone()),
        }
    }

    /// A SIGHUP reload of `base` applied. A bundle on trial is dropped: the config it ran with
    /// is gone.
    pub fn reloaded(&mut self, base: Config) {
        self.base = base;
        if self.trial.is_some() {
            // The pipeline already runs the reloaded config, not the trial's previous one.
            let reason = "the config was reloaded during the health check; send the bundle again";
            self.roll_back(reason.into());
        }
    }

    fn current_config(&self) -> Result<Config, String> {
        self.merge(&self.base)
    }

    fn running(&self, config: &Config) -> Running {
        let models = config
            .detectors
            .iter()
            .map(|d| &d.model)
            .chain(config.classifiers.iter().map(|c| &c.model))
            .map(|m| {
                let path = config.resolve(m);
                ModelHash {
                    sha256: std::fs::read(&path)
                        .map_or_else(|_| "unreadable".into(), |b| sha256_hex(&b)),
                    path: path.display().to_string(),
                }
            })
            .collect();
        Running {
            version: self.current.as_ref().map_or(0, |(_, m)| m.version),
            manifest_sha256: self
                .current
                .as_ref()
                .and_then(|(dir, _)| manifest_sha256(dir)),
            models,
        }
    }

    /// Writes the status to `status.json` and the broker, and a line to stderr.
    fn report(&mut self) {
        self.status.time = super::sign::rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        if let Some(u) = &self.status.update {
            let version = u.version.map_or("?".into(), |v| v.to_string());
            let reason = u
                .reason
                .as_deref()
                .map_or(String::new(), |r| format!(": {r}"));
            eprintln!(
                "ocelli: update {version} from {}: {} {}{reason}",
                u.from, u.step, u.outcome
            );
        }
        let json = serde_json::to_vec(&self.status).expect("serialisable");
        let path = self.dir.join("status.json");
        let tmp = self.dir.join("status.json.tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            eprintln!("ocelli: update: {}: {e}", path.display());
        }
        if let Some(inbox) = &self.inbox {
            inbox.publish_status(&json);
        }
    }

    fn step(
        &mut self,
        version: Option<u64>,
        from: &str,
        step: &'static str,
        outcome: &'static str,
        reason: Option<String>,
    ) {
        self.status.update = Some(Attempt {
            version,
            from: from.into(),
            step,
            outcome,
            reason,
        });
        self.report();
    }

    /// The next bundle to apply, from the broker or the watched folder, if any is waiting and
    /// no update is on trial.
    pub fn next_bundle(&mut self) -> Option<(PathBuf, String)> {
        let measured = self.times.len() == self.config.health_frames as usize;
        if self.trial.is_some() || !measured && self.opened.elapsed() < BASELINE_WAIT {
            return None;
        }
        if let Some(inbox) = &self.inbox {
            match inbox.next() {
                Some(Delivery::Bundle { path, topic }) => return Some((path, topic)),
                Some(Delivery::Oversized { bytes, max }) => {
                    let reason = format!(
                        "a message of {bytes} bytes, over the bound of {max} (update.max_bundle_mb): oversized"
                    );
                    self.step(None, "mqtt", "received", "refused", Some(reason));
                    return None;
                }
                Some(Delivery::Unkept { topic, reason }) => {
                    self.step(None, &topic, "received", "refused", Some(reason));
                    return None;
                }
                None => {}
            }
        }
        let watch = self.watch.as_ref()?;
        if Instant::now() < self.next_poll {
            return None;
        }
        self.next_poll = Instant::now() + POLL;
        let mut found: Vec<PathBuf> = std::fs::read_dir(watch)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "bundle"))
            // A file still being copied in keeps changing; one left alone for a second is taken.
            .filter(|p| {
                std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= SETTLED))
            })
            .collect();
        found.sort();
        let path = found.into_iter().next()?;
        let from = path.display().to_string();
        // Taken into the state folder first, so that a crash while it is applied does not take
        // it again at every start (the restart removes it there).
        let taken = self.dir.join("incoming").join(path.file_name()?);
        match std::fs::rename(&path, &taken) {
            Ok(()) => Some((taken, from)),
            Err(_) => Some((path, from)),
        }
    }

    /// Verifies and stages the bundle at `path` and builds the config that runs it instead of
    /// `running`. A refusal
    /// is reported and gives `None`; the bundle file is removed either way.
    pub fn prepare(&mut self, path: &Path, from: &str, running: &Config) -> Option<Config> {
        let prepared = self.try_prepare(path, from, running);
        let _ = std::fs::remove_file(path);
        match prepared {
            Ok(config) => Some(config),
            Err((version, step, reason)) => {
                self.step(version, from, step, "refused", Some(reason));
                None
            }
        }
    }

    fn try_prepare(
        &mut self,
        path: &Path,
        from: &str,
        running: &Config,
    ) -> Result<Config, (Option<u64>, &'static str, String)> {
        self.step(None, from, "received", "in-progress", None);
        let verified = Bundle::open(path, &self.trusted, self.limits)
            .map_err(|e| (None, "received", e.to_string()))?;
        let version = verified.manifest().version;
        let refuse = |reason: String| (Some(version), "verified", reason);
        verified
            .check_newer_than(self.floor)
            .map_err(|e| refuse(e.to_string()))?;
        self.step(Some(version), from, "verified", "in-progress", None);
        let staging = self.dir.join(format!("v{version}.staging"));
        let staged = verified
            .stage(&staging)
            .map_err(|e| refuse(e.to_string()))?;
        hold("staging");
        let dir = self.dir.join(format!("v{version}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&staging);
                refuse(format!("{}: {e}", dir.display()))
            })?;
        self.step(Some(version), from, "staged", "in-progress", None);
        let config_file = dir.join(
            staged
                .config
                .strip_prefix(&staging)
                .unwrap_or(&staged.config),
        );
        let refuse = |reason: String| (Some(version), "staged", reason);
        let config = bundle_config(&self.base, &dir, &config_file).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            refuse(e)
        })?;
        let link = self.dir.join("trial");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("v{version}"), &link)
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                refuse(format!("{}: {e}", link.display()))
            })?;
        hold("swap");
        self.trial = Some(Trial {
            version,
            dir,
            previous: running.clone(),
            previous_running: self.status.running.clone(),
            baseline: median(self.times.iter().copied().collect()),
            times: Vec::with_capacity(self.config.health_frames as usize),
            started: Instant::now(),
        });
        Ok(config)
    }

    /// The pipeline swapped the prepared config in (`Ok`, the config now running), or could
    /// not load it (`Err`): the bundle is refused and removed.
    pub fn swapped(&mut self, result: Result<&Config, String>) {
        let Some(trial) = &self.trial else {
            return;
        };
        let (version, from) = (trial.version, self.from());
        match result {
            Ok(new) => {
                let running = Running {
                    version,
                    manifest_sha256: manifest_sha256(&trial.dir),
                    ..self.running(new)
                };
                self.status.running = running;
                let n = self.config.health_frames;
                let reason = Some(format!("checking {n} frames"));
                self.step(Some(version), &from, "health-check", "in-progress", reason);
            }
            Err(e) => {
                let trial = self.trial.take().expect("on trial");
                self.drop_trial(&trial);
                self.step(
                    Some(version),
                    &from,
                    "swapped",
                    "refused",
                    Some(format!("does not load: {e}")),
                );
            }
        }
    }

    fn from(&self) -> String {
        self.status
            .update
            .as_ref()
            .map_or(String::new(), |u| u.from.clone())
    }

    /// Counts a frame: `Ok(Some(µs))` when the detectors ran in that time, `Ok(None)` when they
    /// did not run, `Err` when they failed. Commits or rolls back the update on trial when its
    /// check is over.
    pub fn observe(&mut self, frame: Result<Option<u32>, String>) -> Health {
        let Some(trial) = self.trial.as_mut() else {
            if let Ok(Some(us)) = frame {
                if self.times.len() == self.config.health_frames as usize {
                    self.times.pop_front();
                }
                self.times.push_back(us);
            }
            return Health::Pending;
        };
        let us = match frame {
            // A motion gate on a still scene must not hold the check, and every later update,
            // for ever.
            Ok(None) if trial.started.elapsed() > TRIAL_LIMIT => {
                let reason = format!(
                    "only {} of {} frames ran the detectors in {} s",
                    trial.times.len(),
                    self.config.health_frames,
                    TRIAL_LIMIT.as_secs()
                );
                return self.roll_back(reason);
            }
            Ok(None) => return Health::Pending,
            Ok(Some(us)) => us,
            Err(e) => return self.roll_back(format!("frame failed: {e}")),
        };
        trial.times.push(us);
        if trial.times.len() == 1 {
            hold("health-check");
        }
        if trial.times.len() < self.config.health_frames as usize {
            return Health::Pending;
        }
        let new = median(trial.times.clone()).unwrap_or(0);
        let ms = |us: u32| us as f64 / 1000.0;
        match trial.baseline {
            Some(old) if f64::from(new) > self.config.max_slowdown * f64::from(old) => {
                let reason = format!(
                    "inference {:.1} ms median over {} frames, over {} × the {:.1} ms before (update.max_slowdown)",
                    ms(new),
                    self.config.health_frames,
                    self.config.max_slowdown,
                    ms(old)
                );
                self.roll_back(reason)
            }
            baseline => {
                let reason = match baseline {
                    Some(old) => format!(
                        "{} frames without error, inference {:.1} ms median against {:.1} ms before",
                        self.config.health_frames,
                        ms(new),
                        ms(old)
                    ),
                    None => format!(
                        "{} frames without error, inference {:.1} ms median (no frames before to compare)",
                        self.config.health_frames,
                        ms(new)
                    ),
                };
                match self.commit(reason) {
                    Ok(()) => Health::Pending,
                    Err(e) => self.roll_back(format!("cannot make it current: {e}")),
                }
            }
        }
    }

    /// Makes the bundle on trial `current`; on an error it stays on trial, for a rollback.
    fn commit(&mut self, reason: String) -> std::io::Result<()> {
        std::fs::rename(self.dir.join("trial"), self.dir.join("current"))
            .and_then(|()| sync_dir(&self.dir))?;
        let trial = self.trial.take().expect("on trial");
        let from = self.from();
        if let Some((old, _)) = self.current.take().filter(|(o, _)| *o != trial.dir) {
            let _ = std::fs::remove_dir_all(old);
        }
        let manifest = std::fs::read(trial.dir.join(super::bundle::MANIFEST))
            .ok()
            .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
        if let Some(m) = manifest {
            self.current = Some((trial.dir.clone(), m));
        }
        self.floor = self.floor.max(trial.version);
        // The new version's frames are the baseline of the next update.
        self.times.clear();
        self.times.extend(trial.times.iter().copied());
        self.step(Some(trial.version), &from, "done", "applied", Some(reason));
        Ok(())
    }

    fn roll_back(&mut self, reason: String) -> Health {
        let trial = self.trial.take().expect("on trial");
        let from = self.from();
        self.drop_trial(&trial);
        self.status.running = trial.previous_running;
        self.step(
            Some(trial.version),
            &from,
            "done",
            "rolled-back",
            Some(reason),
        );
        Health::RollBack(Box::new(trial.previous))
    }

    fn drop_trial(&mut self, trial: &Trial) {
        let _ = std::fs::remove_file(self.dir.join("trial"));
        let _ = std::fs::remove_dir_all(&trial.dir);
        let _ = sync_dir(&self.dir);
    }
}

/// `base` running the detectors and classifiers of the config fragment `file` of the bundle
/// staged in `dir`, whose relative paths name files of the bundle.
fn bundle_config(base: &Config, dir: &Path, file: &Path) -> Result<Config, String> {
    let text =
        read_bounded(file, MAX_CONFIG_BYTES).map_err(|e| format!("{}: {e}", file.display()))?;
    let text =
        String::from_utf8(text).map_err(|e| format!("{}: not UTF-8: {e}", file.display()))?;
    let fragment = Fragment::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let fragment = fragment.rooted_at(dir);
    base.with_models(file, &text, fragment.detectors, fragment.classifiers)
        .map_err(|e: ConfigError| e.to_string())
}

/// The sha256 of the `manifest.json` staged in `dir`, which lists every file's.
fn manifest_sha256(dir: &Path) -> Option<String> {
    std::fs::read(dir.join(super::bundle::MANIFEST))
        .ok()
        .map(|b| sha256_hex(&b))
}

/// The entries of folder `dir`; none when it cannot be read.
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn version_of(dir: &Path) -> Option<u64> {
    dir.file_name()?.to_str()?.strip_prefix('v')?.parse().ok()
}

fn median(mut v: Vec<u32>) -> Option<u32> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
