//! The locks of the tiers: a commit lock per scope under a gate per table
//! ([`CommitLocks`]), and the claims of statements that keep losing their optimistic
//! attempts ([`Claims`]). `write.rs` takes them for every commit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kalamdb_commons::Value;
use kalamdb_store::row_codec::encode_value;
use parking_lot::Mutex;

/// The commit locks: one per scope of a table (a user's rows of a USER table, all
/// rows of a SHARED one), under one gate per table.
///
/// - A commit holds its scope's lock (writers of other scopes — other users of a
///   USER table — never wait for it) and the table's gate for reading.
/// - What needs the whole table still — a flush taking its watermark, DDL that
///   changes or drops the table, the last step of an index build — holds the gate
///   for writing: no commit of any scope is in progress, and new ones wait.
/// - A live subscription registers, and the STREAM sweep frees expired rows, under
///   their scope's lock.
///
/// So `_seq` grows in commit order within each scope, and across the table at each
/// moment the gate is held for writing (a flush's watermark).
#[derive(Default)]
pub(crate) struct CommitLocks {
    tables: Mutex<HashMap<u32, Arc<TableLocks>>>,
}

#[derive(Default)]
struct TableLocks {
    gate: Arc<tokio::sync::RwLock<()>>,
    scopes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A scope's commit lock, held.
pub(crate) struct CommitGuard {
    scope: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// `None` for a transaction's second and later scopes of one table (the first
    /// one's guard holds the gate).
    _gate: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    table: Arc<TableLocks>,
    name: String,
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        drop(self.scope.take());
        // A scope nobody else waits for is forgotten (one lock per user per table
        // would otherwise stay forever).
        let mut scopes = self.table.scopes.lock();
        if scopes
            .get(&self.name)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            scopes.remove(&self.name);
        }
    }
}

/// A table's gate, held for writing: no commit of the table is in progress.
pub(crate) type TableGuard = tokio::sync::OwnedRwLockWriteGuard<()>;

impl CommitLocks {
    fn table(&self, table_id: u32) -> Arc<TableLocks> {
        self.tables.lock().entry(table_id).or_default().clone()
    }

    fn scope_lock(table: &TableLocks, scope: &str) -> Arc<tokio::sync::Mutex<()>> {
        table.scopes.lock().entry(scope.to_string()).or_default().clone()
    }

    /// The commit lock of `scope` of a table.
    pub async fn lock(&self, table_id: u32, scope: &str) -> CommitGuard {
        let table = self.table(table_id);
        let gate = table.gate.clone().read_owned().await;
        let lock = Self::scope_lock(&table, scope);
        let held = lock.lock_owned().await;
        CommitGuard {
            scope: Some(held),
            _gate: Some(gate),
            table,
            name: scope.to_string(),
        }
    }

    /// The commit locks of several scopes (a transaction's commit), in the order
    /// given, which must be (table, scope) order: each table's gate is taken once
    /// (a second read request could queue behind a waiting writer of the gate and
    /// never be granted while the first is held), then its scopes' locks.
    pub async fn lock_all(&self, scopes: &[(u32, &str)]) -> Vec<CommitGuard> {
        let mut guards: Vec<CommitGuard> = Vec::with_capacity(scopes.len());
        let mut gate: Option<(u32, Arc<TableLocks>)> = None;
        for &(table_id, scope) in scopes {
            let (table, gate_guard) = match &gate {
                Some((id, table)) if *id == table_id => (table.clone(), None),
                _ => {
                    let table = self.table(table_id);
                    let held = table.gate.clone().read_owned().await;
                    gate = Some((table_id, table.clone()));
                    (table, Some(held))
                }
            };
            let lock = Self::scope_lock(&table, scope);
            let held = lock.lock_owned().await;
            guards.push(CommitGuard {
                scope: Some(held),
                _gate: gate_guard,
                table,
                name: scope.to_string(),
            });
        }
        guards
    }

    /// [`CommitLocks::lock`] from a blocking thread (a flush's, the sweep's).
    pub fn lock_blocking(&self, table_id: u32, scope: &str) -> CommitGuard {
        let table = self.table(table_id);
        let gate = futures::executor::block_on(table.gate.clone().read_owned());
        let lock = Self::scope_lock(&table, scope);
        let held = lock.blocking_lock_owned();
        CommitGuard {
            scope: Some(held),
            _gate: Some(gate),
            table,
            name: scope.to_string(),
        }
    }

    /// The whole table: waits for the commits in progress, and holds new ones.
    pub async fn lock_table(&self, table_id: u32) -> TableGuard {
        self.table(table_id).gate.clone().write_owned().await
    }

    /// Forgets a dropped table's locks (table ids are never reused).
    pub fn forget(&self, table_id: u32) {
        self.tables.lock().remove(&table_id);
    }
}

/// Claims: how a statement that keeps losing to other writers still finishes,
/// without running its query under a lock.
///
/// After [`OPTIMISTIC_ATTEMPTS`](crate::dml) attempts whose commits found their
/// rows changed, a statement claims the keys its last attempt wrote in its table's
/// scope ([`claim`]) and runs again holding no lock. A commit of another statement
/// that writes a claimed key ([`Outcome::Claimed`]) waits — holding nothing — until
/// the claim is released, then runs again: like a row lock of PostgreSQL, only the
/// writers of the claimed rows wait, never another user's (scopes are claimed
/// apart). Keys the claimant did not know of (new rows its WHERE now matches) are
/// added when they make it lose again; after [`WIDE_CLAIM_ROUNDS`] such rounds the
/// claim covers the whole scope. One claim per scope at a time: a second claimant
/// waits for the first, so no two claimants wait for each other.
/// The claim of each claimed scope, by (table, scope).
type ClaimedScopes = Mutex<HashMap<(u32, String), Arc<Claim>>>;

#[derive(Default)]
pub(crate) struct Claims {
    scopes: Arc<ClaimedScopes>,
    next_owner: std::sync::atomic::AtomicU64,
}

impl Claims {
    /// The claim of a scope, if any (nothing to look up, usually).
    pub fn of(&self, table_id: u32, scope: &str) -> Option<Arc<Claim>> {
        let scopes = self.scopes.lock();
        if scopes.is_empty() {
            return None;
        }
        scopes.get(&(table_id, scope.to_string())).cloned()
    }

    /// Claims `keys` of `scope` of a table for a statement (see [`Claims`]), once no
    /// other statement holds a claim there.
    pub async fn claim(&self, table_id: u32, scope: &str, keys: Vec<Vec<u8>>) -> ClaimGuard {
        let key = (table_id, scope.to_string());
        loop {
            let other = {
                let mut scopes = self.scopes.lock();
                match scopes.get(&key) {
                    Some(other) => other.clone(),
                    None => {
                        let owner = self.next_owner.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let claim = Arc::new(Claim {
                            owner,
                            keys: Mutex::new(keys.into_iter().collect()),
                            all: std::sync::atomic::AtomicBool::new(false),
                            released: tokio::sync::watch::channel(false).0,
                        });
                        scopes.insert(key.clone(), claim.clone());
                        return ClaimGuard {
                            scopes: self.scopes.clone(),
                            scope: key,
                            claim,
                        };
                    }
                }
            };
            other.released().await;
        }
    }
}

/// One statement's claim of keys of one scope of one table.
pub(crate) struct Claim {
    owner: u64,
    keys: Mutex<HashSet<Vec<u8>>>,
    /// Every key of the scope.
    all: std::sync::atomic::AtomicBool,
    released: tokio::sync::watch::Sender<bool>,
}

impl Claim {
    /// Resolves once the claim is released.
    pub async fn released(&self) {
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }

    /// Whether writing `keys` (none is no write) touches the claim.
    pub fn covers<'a>(&self, mut keys: impl Iterator<Item = &'a Value>) -> bool {
        if self.all.load(std::sync::atomic::Ordering::Acquire) {
            return keys.next().is_some();
        }
        let claimed = self.keys.lock();
        keys.any(|key| claimed.contains(&key_cell(key)))
    }
}

/// Claim rounds after which a claim covers its whole scope.
pub(crate) const WIDE_CLAIM_ROUNDS: u32 = 3;

/// A statement's claim; released when dropped (the statement ended, however).
pub(crate) struct ClaimGuard {
    scopes: Arc<ClaimedScopes>,
    scope: (u32, String),
    claim: Arc<Claim>,
}

impl ClaimGuard {
    /// Adds keys (and, with `all`, the whole scope) to the claim.
    pub fn extend(&self, keys: impl IntoIterator<Item = Vec<u8>>, all: bool) {
        self.claim.keys.lock().extend(keys);
        if all {
            self.claim.all.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether `claim` is this one.
    pub fn owns(&self, claim: &Claim) -> bool {
        self.claim.owner == claim.owner
    }

    pub fn covers_scope(&self, table_id: u32, scope: &str) -> bool {
        self.scope.0 == table_id && self.scope.1 == scope
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let mut scopes = self.scopes.lock();
        if scopes
            .get(&self.scope)
            .is_some_and(|c| Arc::ptr_eq(c, &self.claim))
        {
            scopes.remove(&self.scope);
        }
        drop(scopes);
        self.claim.released.send_replace(true);
    }
}

/// A key as the row codec writes it (claims compare these).
pub(crate) fn key_cell(key: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(key, &mut out);
    out
}
