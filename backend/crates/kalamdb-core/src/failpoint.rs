//! Crash-test hooks. `KALAMDB_FAILPOINT` names one or more steps, separated by
//! commas. At a crash step (`flush_started`, `segment_written`, `manifest_saved`,
//! `scope_committed`, `before_completed`) the server aborts the process, as
//! `kill -9` would stop it there. A loss step simulates a power loss that drops the
//! unsynced tail of RocksDB's WAL: `lose_flush_start` applies the write it names in
//! memory only, never to the store; `lose_unsynced_writes` keeps every write that
//! is not fsynced out of the WAL, so a `kill -9` loses it. Unset in production;
//! the crash-safety tests use it.

use std::sync::OnceLock;

static FAILPOINTS: OnceLock<Vec<String>> = OnceLock::new();

fn armed_steps() -> &'static [String] {
    FAILPOINTS.get_or_init(|| {
        std::env::var("KALAMDB_FAILPOINT")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// True when `step` is armed.
pub(crate) fn armed(step: &str) -> bool {
    armed_steps().iter().any(|s| s == step)
}

/// Aborts the process when `step` is armed.
pub(crate) fn hit(step: &str) {
    if armed(step) {
        eprintln!("KALAMDB_FAILPOINT: aborting at {step}");
        std::process::abort();
    }
}

/// Pause points a test sets on one database (the environment variable above is one
/// per process, shared by every server a test binary starts). While a step is held,
/// work that reaches it waits there — a flush as it starts (`flush_start`), after
/// each full batch it writes (`flush_batch`), a DML statement of user `u` before its
/// commit (`dml_commit:u`) and before it claims keys (`dml_claim:u`), a commit that
/// reads the rows it replaces of table `t` (`replaced_rows:t`), the build of an index
/// of table `t` between its bulk pass and its catch-up (`index_build:t`), a password
/// check of user `u` before its result is cached (`credential_cache:u`), the socket
/// writer of a live-query connection of user `u` before each message (`ws_writer:u`),
/// a costly live filter of user `u` (`live_filter:u`) — until the step is released
/// ([`Holds::release`]), passed once ([`Holds::pass`]) or the job is cancelled.
/// Nothing is held unless a test holds it.
#[derive(Default)]
pub struct Holds {
    held: parking_lot::Mutex<std::collections::HashMap<String, Held>>,
    changed: parking_lot::Condvar,
}

/// A held step: how many times work arrived, and how many of those may go on.
#[derive(Default, Clone, Copy)]
struct Held {
    arrivals: u64,
    passed: u64,
}

impl Holds {
    /// Makes work that reaches `step` wait there.
    pub fn hold(&self, step: &str) {
        self.held.lock().insert(step.to_string(), Held::default());
    }

    /// Lets waiting and later work pass `step`.
    pub fn release(&self, step: &str) {
        self.held.lock().remove(step);
        self.changed.notify_all();
    }

    /// Lets the next waiting work (in order of arrival) pass `step`, which stays
    /// held for later arrivals.
    pub fn pass(&self, step: &str) {
        if let Some(held) = self.held.lock().get_mut(step) {
            held.passed += 1;
        }
        self.changed.notify_all();
    }

    /// How many times work has stopped at the held `step` (0 when not held).
    pub fn arrivals(&self, step: &str) -> u64 {
        self.held.lock().get(step).map_or(0, |h| h.arrivals)
    }

    /// Counts an arrival at `step` if it is held; the arrival's number.
    fn arrive(&self, step: &str) -> Option<u64> {
        let mut held = self.held.lock();
        let held = held.get_mut(step)?;
        held.arrivals += 1;
        Some(held.arrivals)
    }

    /// Whether arrival `ticket` at `step` must still wait.
    fn waits(&self, step: &str, ticket: u64) -> bool {
        self.held.lock().get(step).is_some_and(|h| h.passed < ticket)
    }

    /// Waits while the step `step()` names is held, until it is released: for async
    /// work (a DML statement of user `u` between its reads and its commit,
    /// `dml_commit:u`). `step` runs only when some step is held.
    pub async fn wait_async(&self, step: impl FnOnce() -> String) {
        if self.held.lock().is_empty() {
            return;
        }
        let step = step();
        let Some(ticket) = self.arrive(&step) else {
            return;
        };
        while self.waits(&step, ticket) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// [`Holds::wait`] for a step whose name is built only when some step is held
    /// (a credential check of user `u`: `credential_cache:u`). Blocking.
    pub(crate) fn wait_named(&self, step: impl FnOnce() -> String) {
        if !self.held.lock().is_empty() {
            self.wait(&step(), || false);
        }
    }

    /// Blocks while `step` is held, until it is released or `cancelled()` says so.
    /// Blocking: call from a blocking thread.
    pub(crate) fn wait(&self, step: &str, cancelled: impl Fn() -> bool) {
        let Some(ticket) = self.arrive(step) else {
            return;
        };
        let mut held = self.held.lock();
        while held.get(step).is_some_and(|h| h.passed < ticket) && !cancelled() {
            self.changed
                .wait_for(&mut held, std::time::Duration::from_millis(10));
        }
    }
}
