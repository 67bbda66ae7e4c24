//! Instruction-set paths the CPU lacks: their tests pass without running them, so each is
//! announced on stderr past the test harness's capture (visible whether the test passes or
//! not), once per path and test binary. `just test-host` counts the `ISA path skipped` lines.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Mutex;

/// Announces that `path` is not tested here because the CPU lacks `missing`.
pub fn skipped(path: &str, missing: &str) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if SEEN.lock().unwrap().insert(path.to_string()) {
        // `writeln!` on the handle, not `eprintln!`, which the harness captures.
        let _ = writeln!(
            std::io::stderr(),
            "ISA path skipped: {path} (this CPU lacks {missing})"
        );
    }
}
