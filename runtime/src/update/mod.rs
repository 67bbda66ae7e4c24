//! Fleet updates: signed bundles of models with the config fragment that uses them
//! (docs/fleet.md). A device takes them from a watched folder or the broker, stages them,
//! swaps them in through the reload path, checks their health over a few frames and rolls back
//! on failure, reporting each step on a retained status topic.

pub mod bundle;
mod inbox;
pub mod sign;
mod state;

use std::path::PathBuf;

use serde::Deserialize;

pub use inbox::Inbox;
pub use state::{Health, Status, UpdateError, Updater};

/// The `[update]` table of the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Public key files (`KEY.pub`, from `ocelli-compress keygen`) of the signers whose bundles
    /// are accepted.
    pub trusted_keys: Vec<PathBuf>,
    /// Where bundles are staged and kept; `$STATE_DIRECTORY/updates`, else
    /// `/var/lib/ocelli/updates`, when unset.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// A folder polled for `*.bundle` files; each is taken, applied or refused, and removed.
    #[serde(default)]
    pub watch_dir: Option<PathBuf>,
    /// Take bundles from the broker of `[output.mqtt]`, on `<prefix>/<device>/update` and
    /// `<prefix>/fleet/update`.
    #[serde(default)]
    pub mqtt: bool,
    /// Frames a new bundle runs before it is kept.
    #[serde(default = "default_health_frames")]
    pub health_frames: u32,
    /// A new bundle whose median inference time is more than this times the old one's is
    /// rolled back.
    #[serde(default = "default_max_slowdown")]
    pub max_slowdown: f64,
    /// Bound of a bundle, in MB (at most 512).
    #[serde(default = "default_max_bundle_mb")]
    pub max_bundle_mb: f64,
}

fn default_health_frames() -> u32 {
    30
}
fn default_max_slowdown() -> f64 {
    2.0
}
fn default_max_bundle_mb() -> f64 {
    64.0
}

impl UpdateConfig {
    /// The first setting out of range: its key, the value and what is expected.
    pub fn check(&self) -> Option<(&'static str, String, &'static str)> {
        let max_mb = crate::limits::MAX_BUNDLE_BYTES as f64 / 1e6;
        if self.trusted_keys.is_empty() {
            Some(("trusted_keys", "[]".into(), "one or more public key files"))
        } else if self.watch_dir.is_none() && !self.mqtt {
            Some((
                "watch_dir",
                "unset, and mqtt = false".into(),
                "a folder to watch, or mqtt = true (or both)",
            ))
        } else if !(1..=10_000).contains(&self.health_frames) {
            let v = self.health_frames.to_string();
            Some(("health_frames", v, "1 to 10000"))
        } else if !(1.0..=100.0).contains(&self.max_slowdown) {
            let v = self.max_slowdown.to_string();
            Some(("max_slowdown", v, "1 to 100"))
        } else if !(0.001..=max_mb).contains(&self.max_bundle_mb) {
            let v = self.max_bundle_mb.to_string();
            Some(("max_bundle_mb", v, "0.001 to 536.870912 MB"))
        } else {
            None
        }
    }

    fn max_bundle_bytes(&self) -> u64 {
        (self.max_bundle_mb * 1e6) as u64
    }
}
