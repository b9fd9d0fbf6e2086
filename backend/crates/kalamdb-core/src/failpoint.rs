//! Crash-test hooks. When the environment variable `KALAMDB_FAILPOINT` names a step
//! (`flush_started`, `segment_written`, `manifest_saved`, `scope_committed`,
//! `before_completed`), the server aborts the process when it reaches that step, as
//! `kill -9` would stop it there. Unset in production; the crash-safety tests use it.

use std::sync::OnceLock;

static FAILPOINT: OnceLock<Option<String>> = OnceLock::new();

pub(crate) fn hit(step: &str) {
    let armed = FAILPOINT.get_or_init(|| std::env::var("KALAMDB_FAILPOINT").ok().filter(|s| !s.is_empty()));
    if armed.as_deref() == Some(step) {
        eprintln!("KALAMDB_FAILPOINT: aborting at {step}");
        std::process::abort();
    }
}
