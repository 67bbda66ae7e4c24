//! What the tests that drive the `ocelli` binary share: starting it, through the emulator when
//! it is cross-built, and waiting on it with time to spare under emulation.

use std::ops::{Deref, DerefMut};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `ocelli` binary as a command. Cross-built, it is foreign to the host: it starts through
/// the emulator that runs this test (cross/qemu-user.sh names itself in `OCELLI_TEST_RUNNER`),
/// which passes signals on to it.
pub fn ocelli_command(args: &[&str]) -> Command {
    let bin = env!("CARGO_BIN_EXE_ocelli");
    let mut command = match std::env::var_os("OCELLI_TEST_RUNNER") {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command.args(args);
    command
}

/// Whether this test runs under the emulator (cross/qemu-user.sh sets `OCELLI_TEST_RUNNER`).
pub fn emulated() -> bool {
    std::env::var_os("OCELLI_TEST_RUNNER").is_some()
}

/// How much longer everything takes here: emulated, the detector runs 50-150 times slower.
pub fn slowdown() -> u32 {
    if emulated() { 20 } else { 1 }
}

/// Polls `cond` every 20 ms for up to `secs` (stretched under emulation).
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs) * slowdown();
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A started process that is killed when the test lets go of it, so that a failed assertion
/// never leaves it running (and writing) after the test.
pub struct Running(pub Child);

impl Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
