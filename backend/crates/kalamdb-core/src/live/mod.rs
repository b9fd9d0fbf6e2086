//! Live queries: subscriptions to one SELECT over one table, fed by the commits
//! that change it (`docs/ARCHITECTURE.md`, "Live queries"; the protocol is in
//! `docs/API.md`).
//!
//! - A **connection** ([`LiveConnection`]) is one WebSocket of one authenticated
//!   caller. Everything it is sent goes through its [`Outbox`]: one ordered queue,
//!   bounded in messages and bytes, drained by the socket's writer.
//! - A **subscription** is compiled once (`compile.rs`: the table, the caller's
//!   scope, a DataFusion filter over one row and the projected columns) and
//!   registered with its table's [`TableFeed`] under the table's commit lock, at
//!   the same moment its snapshot is taken: every commit before it is in the
//!   snapshot, every commit after it reaches the feed (`_seq`s are allocated in
//!   commit order per table, so "after" is `_seq > start_seq`).
//! - **Commits** (`write.rs`) hand their changes — each key's new row and the row
//!   it replaced — to the table's feed while they still hold the commit lock, so a
//!   feed receives a table's changes in `_seq` order. The writer only queues them:
//!   a per-table dispatcher task (`feed.rs`) decodes each change set once, evaluates
//!   every subscription's filter on the old and the new row, and queues the
//!   messages. A subscriber that does not read never slows writers: when its
//!   connection's queue is full, that subscription ends with `SUBSCRIPTION_LAGGED`.

mod compile;
mod feed;
mod history;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use kalamdb_commons::{ErrorCode, KalamError, KalamResult};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use tokio::sync::{Notify, mpsc};

use crate::access::{Action, Caller, allows};
use crate::catalog::TableDef;
pub use crate::defaults::LiveOptions;
use crate::query::QueryEngine;

use crate::observers::{AfterWrite, ChangeSet, CommitObserver};
pub(crate) use history::{open_log, sweep_history};

/// What the socket of a connection is to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveMessage {
    /// One JSON message.
    Text(String),
    /// Close the socket with this code and reason (nothing follows).
    Close(u16, String),
}

/// A connection's queue of messages to send, bounded in messages and bytes
/// (`live_queue_messages`, 16 MiB) for everything the server queues: changes
/// (writers never wait on it: a full queue ends the subscription with
/// `SUBSCRIPTION_LAGGED`), initial data and replays (they wait for room), and the
/// replies to the client's own messages (they wait for room a while, then the
/// connection is closed: [`REPLY_WAIT`]). The only messages past the bound are the
/// last `error` of each ending subscription (at most one per subscription).
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<LiveMessage>,
    messages: AtomicUsize,
    bytes: AtomicUsize,
    room: Notify,
    closed: AtomicBool,
    /// Set when the connection is closed at once (the client does not read), with
    /// the close frame's code and reason; the socket's writer drops what is queued.
    aborted: parking_lot::Mutex<Option<(u16, String)>>,
    abort: Notify,
    max_messages: usize,
    max_bytes: usize,
}

/// How long a reply to one of the client's messages waits for room in its
/// connection's queue before the connection is closed (1008): a client that sends
/// messages and does not read the answers.
pub const REPLY_WAIT: Duration = Duration::from_secs(2);

impl Outbox {
    fn new(options: &LiveOptions) -> (Arc<Outbox>, mpsc::UnboundedReceiver<LiveMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Arc::new(Outbox {
            tx,
            messages: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            aborted: parking_lot::Mutex::new(None),
            abort: Notify::new(),
            max_messages: options.queue_messages.max(1),
            max_bytes: options.queue_bytes.max(1),
        });
        (outbox, rx)
    }

    fn has_room(&self, len: usize) -> bool {
        let messages = self.messages.load(Ordering::Acquire);
        messages == 0
            || (messages < self.max_messages && self.bytes.load(Ordering::Acquire) + len <= self.max_bytes)
    }

    /// Queues `text` whatever the queue holds: only a subscription's last `error`
    /// (at most one per subscription) and what has been checked for room.
    fn push(&self, text: String) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        self.messages.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(text.len(), Ordering::AcqRel);
        let _ = self.tx.send(LiveMessage::Text(text));
    }

    /// Queues `text` if the queue has room for it.
    fn try_push(&self, text: String) -> bool {
        if !self.has_room(text.len()) {
            return false;
        }
        self.push(text);
        true
    }

    /// Queues `text` once the queue has room; `false` when the connection closed.
    async fn push_waiting(&self, text: String) -> bool {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.has_room(text.len()) {
                self.push(text);
                return true;
            }
            notified.await;
        }
    }

    /// Queues a reply to the client once the queue has room; when none comes within
    /// [`REPLY_WAIT`] the connection is closed at once with 1008. `false` when the
    /// connection is closed.
    async fn push_reply(&self, text: String) -> bool {
        match tokio::time::timeout(REPLY_WAIT, self.push_waiting(text)).await {
            Ok(sent) => sent,
            Err(_) => {
                self.abort(
                    1008,
                    "the client does not read its messages (live_queue_messages)",
                );
                false
            }
        }
    }

    /// Sends a close frame after what is queued; nothing is queued after it.
    fn close(&self, code: u16, reason: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(LiveMessage::Close(code, reason.to_string()));
        }
        self.room.notify_waiters();
    }

    /// Closes now: the socket's writer sends the close frame ahead of what is
    /// queued and drops the rest.
    fn abort(&self, code: u16, reason: &str) {
        self.aborted
            .lock()
            .get_or_insert_with(|| (code, reason.to_string()));
        self.close(code, reason);
        self.abort.notify_waiters();
    }
}

/// The receiving end of a connection's queue (the socket's writer).
pub struct LiveReceiver {
    rx: mpsc::UnboundedReceiver<LiveMessage>,
    outbox: Arc<Outbox>,
}

impl LiveReceiver {
    /// Resolves when the connection is closed at once (the client does not read):
    /// the close frame to send instead of what is queued.
    pub async fn aborted(&self) -> (u16, String) {
        loop {
            let notified = self.outbox.abort.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.outbox.aborted.lock().clone() {
                return reason;
            }
            notified.await;
        }
    }

    /// The next message to send; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<LiveMessage> {
        let message = self.rx.recv().await?;
        if let LiveMessage::Text(text) = &message {
            self.outbox.messages.fetch_sub(1, Ordering::AcqRel);
            self.outbox.bytes.fetch_sub(text.len(), Ordering::AcqRel);
            self.outbox.room.notify_waiters();
        }
        Some(message)
    }
}

/// Options of one `subscribe` message.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Only the newest `n` matching rows as initial data.
    pub last_rows: Option<usize>,
    /// Rows per `initial_data` message (default 1000).
    pub batch_size: Option<usize>,
    /// Replay every change after this `_seq` instead of sending initial data.
    pub from_seq: Option<u64>,
    /// 64-bit integers as JSON strings.
    pub int64_as_string: bool,
}

const DEFAULT_BATCH_ROWS: usize = 1000;
const MAX_BATCH_ROWS: usize = 100_000;

/// The state of one connection, shared by its subscriptions' bookkeeping.
pub(crate) struct ConnState {
    pub id: u64,
    pub caller: Caller,
    outbox: Arc<Outbox>,
    subs: Mutex<HashMap<String, Arc<Subscription>>>,
}

/// Where a subscription is in its life.
enum Phase {
    /// Initial data (or the replay of `from_seq`) is being sent; changes wait here,
    /// in order.
    Loading(Vec<String>),
    Live,
    Ended,
}

/// One subscription (see the module documentation).
pub(crate) struct Subscription {
    /// The client's id, unique within its connection.
    pub id: String,
    pub conn_id: u64,
    pub caller: Caller,
    pub sql: String,
    pub table: Arc<TableDef>,
    pub scope: String,
    plan: compile::LivePlan,
    /// Changes with a larger `_seq` are this subscription's.
    start_seq: u64,
    outbox: Arc<Outbox>,
    phase: Mutex<Phase>,
    changes_sent: AtomicU64,
    created_at: i64,
    /// The queue of a costly filter's evaluations (`feed.rs`), made with its first
    /// change; dropped when the subscription ends, which ends its task.
    lane: Mutex<Option<mpsc::Sender<feed::Work>>>,
    /// Bytes of decoded rows that queue holds.
    lane_bytes: AtomicUsize,
}

impl Subscription {
    /// The id `system.live` and `KILL LIVE QUERY` use.
    pub fn live_id(&self) -> String {
        live_id(self.conn_id, &self.id)
    }

    /// Queues messages of this subscription in order; `false` when it must end
    /// because its connection's queue is full.
    fn send(&self, messages: Vec<String>, changes: u64) -> bool {
        if messages.is_empty() {
            return true;
        }
        let mut phase = self.phase.lock();
        match &mut *phase {
            Phase::Ended => true,
            Phase::Loading(waiting) => {
                waiting.extend(messages);
                self.changes_sent.fetch_add(changes, Ordering::Relaxed);
                waiting.len() <= self.outbox.max_messages
            }
            Phase::Live => {
                for message in messages {
                    if !self.outbox.try_push(message) {
                        return false;
                    }
                }
                self.changes_sent.fetch_add(changes, Ordering::Relaxed);
                true
            }
        }
    }

    /// Ends the loading phase: what waited is queued, later changes go straight out.
    fn go_live(&self) -> bool {
        let mut phase = self.phase.lock();
        let Phase::Loading(waiting) = &mut *phase else {
            return true;
        };
        for message in std::mem::take(waiting) {
            if !self.outbox.try_push(message) {
                return false;
            }
        }
        *phase = Phase::Live;
        true
    }

    fn is_ended(&self) -> bool {
        matches!(*self.phase.lock(), Phase::Ended)
    }
}

fn live_id(conn_id: u64, id: &str) -> String {
    format!("{conn_id}/{id}")
}

/// Whether a connection holding `subs` has room for a subscription `id`: the id
/// is not in use and the connection is below its limit of `max`.
fn room_for(subs: &HashMap<String, Arc<Subscription>>, id: &str, max: usize) -> KalamResult<()> {
    if subs.contains_key(id) {
        return Err(KalamError::new(
            ErrorCode::InvalidRequest,
            format!("subscription id '{id}' is already in use on this connection"),
        ));
    }
    if subs.len() >= max {
        return Err(KalamError::new(
            ErrorCode::SubscriptionLimit,
            format!(
                "this connection has {} subscriptions, its limit (live_max_subscriptions_per_connection)",
                subs.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn error_message(id: Option<&str>, error: &KalamError) -> String {
    let message = crate::base::public_message(error);
    json!({"type": "error", "id": id, "code": error.code.as_str(), "message": message}).to_string()
}

/// The subscriptions of one table, by scope, and the queue to its dispatcher.
pub(crate) struct TableFeed {
    subs: Arc<RwLock<HashMap<String, Vec<Arc<Subscription>>>>>,
    tx: mpsc::UnboundedSender<Arc<ChangeSet>>,
    /// Change sets queued and not yet dispatched.
    backlog: Arc<AtomicUsize>,
}

/// Change sets a table's dispatcher may fall behind by before every subscription
/// of the table lags (bounds the memory a burst of writes can hold).
const MAX_FEED_BACKLOG: usize = 100_000;

impl TableFeed {
    /// Queues a commit's changes for the dispatcher (called under the table's
    /// commit lock: the order of calls is the `_seq` order).
    pub fn publish(&self, changes: Arc<ChangeSet>) {
        self.backlog.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(changes);
    }
}

/// Every connection and subscription of the server.
pub(crate) struct LiveHub {
    pub options: LiveOptions,
    feeds: RwLock<HashMap<u32, Arc<TableFeed>>>,
    /// `feeds.len()`, read by every commit without the lock.
    feed_count: AtomicUsize,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    per_user: Mutex<HashMap<String, usize>>,
    next_conn: AtomicU64,
    shutting_down: AtomicBool,
    /// When the change history was last swept.
    last_sweep: Mutex<Option<std::time::Instant>>,
    /// Costly filters evaluated at once, all subscriptions (`feed.rs`).
    costly_filters: tokio::sync::Semaphore,
    /// One costly evaluation per user at a time (`feed.rs`).
    costly_turns: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// The database's pause points (a costly filter's evaluation: `live_filter:u`).
    holds: Arc<crate::failpoint::Holds>,
    me: Weak<LiveHub>,
}

impl LiveHub {
    pub fn new(options: LiveOptions, holds: Arc<crate::failpoint::Holds>) -> Arc<LiveHub> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new_cyclic(|me| LiveHub {
            costly_filters: tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1)),
            costly_turns: Mutex::default(),
            holds,
            options,
            feeds: RwLock::default(),
            feed_count: AtomicUsize::new(0),
            conns: Mutex::default(),
            per_user: Mutex::default(),
            next_conn: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            last_sweep: Mutex::new(None),
            me: me.clone(),
        })
    }

    /// True (and the sweep counted as done) once a history bucket has passed
    /// since the last sweep of the change history.
    pub fn sweep_due(&self) -> bool {
        let mut last = self.last_sweep.lock();
        let interval = Duration::from_millis(history::HISTORY_BUCKET_MS);
        if last.is_some_and(|at| at.elapsed() < interval) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// The feed of `table_id` when a subscription of `scope` (or of every scope:
    /// SHARED tables have one, empty) listens. Called by every commit.
    pub fn feed_for(&self, table_id: u32, scope: &str) -> Option<Arc<TableFeed>> {
        if self.feed_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let feeds = self.feeds.read();
        let feed = feeds.get(&table_id)?;
        feed.subs.read().contains_key(scope).then(|| feed.clone())
    }

    /// The turn of a user's costly filters (forgotten when no evaluation of the
    /// user's waits for it).
    fn costly_turn(&self, user_id: &str) -> Arc<tokio::sync::Semaphore> {
        let mut turns = self.costly_turns.lock();
        if turns.len() > 64 {
            turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        }
        turns
            .entry(user_id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
            .clone()
    }

    fn register(&self, sub: &Arc<Subscription>) {
        let mut feeds = self.feeds.write();
        let feed = feeds.entry(sub.table.table_id).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let subs: Arc<RwLock<HashMap<String, Vec<Arc<Subscription>>>>> = Arc::default();
            let backlog = Arc::new(AtomicUsize::new(0));
            tokio::spawn(feed::dispatch(self.me.clone(), subs.clone(), backlog.clone(), rx));
            Arc::new(TableFeed { subs, tx, backlog })
        });
        feed.subs
            .write()
            .entry(sub.scope.clone())
            .or_default()
            .push(sub.clone());
        self.feed_count.store(feeds.len(), Ordering::Release);
    }

    /// Ends `sub`: no more messages, then `error` (if any) as its last one.
    fn end(&self, sub: &Arc<Subscription>, error: Option<&KalamError>) {
        {
            let mut phase = sub.phase.lock();
            if matches!(*phase, Phase::Ended) {
                return;
            }
            *phase = Phase::Ended;
        }
        sub.lane.lock().take();
        {
            let mut feeds = self.feeds.write();
            if let Some(feed) = feeds.get(&sub.table.table_id) {
                let mut subs = feed.subs.write();
                if let Some(list) = subs.get_mut(&sub.scope) {
                    list.retain(|s| !Arc::ptr_eq(s, sub));
                    if list.is_empty() {
                        subs.remove(&sub.scope);
                    }
                }
                if subs.is_empty() {
                    drop(subs);
                    feeds.remove(&sub.table.table_id);
                }
            }
            self.feed_count.store(feeds.len(), Ordering::Release);
        }
        if let Some(conn) = self.conns.lock().get(&sub.conn_id) {
            let mut subs = conn.subs.lock();
            if subs.get(&sub.id).is_some_and(|s| Arc::ptr_eq(s, sub)) {
                subs.remove(&sub.id);
            }
        }
        self.release_user_slot(sub.caller.user_id.as_str());
        if let Some(error) = error {
            sub.outbox.push(error_message(Some(&sub.id), error));
        }
    }

    fn release_user_slot(&self, user_id: &str) {
        let mut per_user = self.per_user.lock();
        if let Some(count) = per_user.get_mut(user_id) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(user_id);
            }
        }
    }

    fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        let conns: Vec<Arc<ConnState>> = self.conns.lock().values().cloned().collect();
        conns
            .iter()
            .flat_map(|c| c.subs.lock().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub fn connections(&self) -> usize {
        self.conns.lock().len()
    }

    /// Server shutdown: every connection gets a close frame (1001, going away).
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let conns: Vec<Arc<ConnState>> = self.conns.lock().values().cloned().collect();
        for conn in conns {
            let subs: Vec<Arc<Subscription>> = conn.subs.lock().values().cloned().collect();
            for sub in subs {
                self.end(&sub, None);
            }
            conn.outbox.close(1001, "server shutting down");
        }
    }

    /// The rows of `system.live` `caller` may see: its own, or every one for dba+.
    pub fn list(&self, caller: &Caller) -> Vec<LiveRow> {
        let mut rows: Vec<LiveRow> = self
            .subscriptions()
            .into_iter()
            .filter(|s| s.caller.user_id == caller.user_id || allows(caller, Action::EveryLiveQuery))
            .map(|s| LiveRow {
                id: s.live_id(),
                subscription: s.id.clone(),
                connection: s.conn_id as i64,
                user: s.caller.username.clone(),
                table: s.table.qualified_name(),
                sql: s.sql.clone(),
                created_at: s.created_at,
                changes_sent: s.changes_sent.load(Ordering::Relaxed) as i64,
            })
            .collect();
        rows.sort_by(|a, b| (a.connection, &a.subscription).cmp(&(b.connection, &b.subscription)));
        rows
    }
}

/// One row of `system.live`.
pub(crate) struct LiveRow {
    pub id: String,
    pub subscription: String,
    pub connection: i64,
    pub user: String,
    pub table: String,
    pub sql: String,
    pub created_at: i64,
    pub changes_sent: i64,
}

/// One WebSocket's live queries, for the API layer. Dropping it ends them all.
pub struct LiveConnection {
    db: Arc<QueryEngine>,
    hub: Arc<LiveHub>,
    conn: Arc<ConnState>,
}

impl LiveConnection {
    /// Opens a connection for `caller`: its messages arrive on the receiver.
    pub(crate) fn open(
        hub: &Arc<LiveHub>,
        db: &Arc<QueryEngine>,
        caller: Caller,
    ) -> KalamResult<(LiveConnection, LiveReceiver)> {
        if hub.shutting_down.load(Ordering::Acquire) {
            return Err(KalamError::new(
                ErrorCode::SubscriptionLimit,
                "the server is shutting down",
            ));
        }
        let mut conns = hub.conns.lock();
        if conns.len() >= hub.options.max_connections {
            return Err(KalamError::new(
                ErrorCode::SubscriptionLimit,
                format!(
                    "the server has {} live connections, its limit (live_max_connections)",
                    conns.len()
                ),
            ));
        }
        let (outbox, rx) = Outbox::new(&hub.options);
        let conn = Arc::new(ConnState {
            id: hub.next_conn.fetch_add(1, Ordering::Relaxed),
            caller,
            outbox: outbox.clone(),
            subs: Mutex::default(),
        });
        conns.insert(conn.id, conn.clone());
        Ok((
            LiveConnection {
                db: db.clone(),
                hub: hub.clone(),
                conn,
            },
            LiveReceiver { rx, outbox },
        ))
    }

    pub fn id(&self) -> u64 {
        self.conn.id
    }

    pub fn caller(&self) -> &Caller {
        &self.conn.caller
    }

    /// Queues a reply for this connection's socket (answers of the protocol:
    /// `pong`, errors of malformed messages) within the queue's bound: a client that
    /// leaves its replies unread for [`REPLY_WAIT`] is closed (1008). `false` when the
    /// connection is closed.
    pub async fn reply(&self, message: String) -> bool {
        self.conn.outbox.push_reply(message).await
    }

    /// Subscribes `sql` as `id`: answers `subscribed`, the initial data (or the
    /// replayed changes of `from_seq`), then changes as they commit, all through
    /// the connection's queue. An error before `subscribed` is returned (the caller
    /// sends it as an `error` message with `id`); later ones end the subscription
    /// with an `error` message of their own.
    pub async fn subscribe(&self, id: &str, sql: &str, options: SubscribeOptions) -> KalamResult<()> {
        let hub = &self.hub;
        let caller = &self.conn.caller;
        if id.is_empty() || id.len() > 128 {
            return Err(KalamError::new(
                ErrorCode::InvalidRequest,
                "a subscription id is 1 to 128 characters",
            ));
        }
        // Admission: the id and the limits (the user's slot is taken at once, so
        // two subscribes racing cannot both pass), then the SQL.
        room_for(
            &self.conn.subs.lock(),
            id,
            hub.options.max_subscriptions_per_connection,
        )?;
        {
            let mut per_user = hub.per_user.lock();
            let count = per_user.entry(caller.user_id.as_str().to_string()).or_default();
            if *count >= hub.options.max_subscriptions_per_user {
                let count = *count;
                return Err(KalamError::new(
                    ErrorCode::SubscriptionLimit,
                    format!(
                        "user '{}' has {count} subscriptions, the limit (live_max_subscriptions_per_user)",
                        caller.username
                    ),
                ));
            }
            *count += 1;
        }
        let started = match compile::compile(&self.db, caller, sql, &options) {
            Ok(compiled) => self.start(id, sql, compiled, &options).await,
            Err(e) => Err(e),
        };
        let (sub, snapshot) = match started {
            Ok(started) => started,
            Err(e) => {
                hub.release_user_slot(caller.user_id.as_str());
                return Err(e);
            }
        };
        let loaded = match options.from_seq {
            Some(from_seq) => history::replay(hub, &sub, snapshot.view.clone(), from_seq).await,
            None => {
                // The initial data is a query: it runs under a statement's budget.
                let budget =
                    crate::budget::Budget::new(&self.db.query_runtime, self.db.options.statement_timeout);
                let load =
                    crate::budget::within_budget(feed::initial_data(&self.db, &sub, snapshot, &options));
                crate::budget::with_budget(budget, load).await
            }
        };
        match loaded {
            Ok(true) => {
                if !sub.go_live() {
                    hub.end(&sub, Some(&lagged()));
                }
            }
            Ok(false) => {} // ended meanwhile (unsubscribed, killed, connection closed)
            Err(e) => hub.end(&sub, Some(&e)),
        }
        Ok(())
    }

    /// Registers the subscription under its table's commit lock and takes the
    /// snapshot its initial data comes from at the same moment; sends `subscribed`.
    async fn start(
        &self,
        id: &str,
        sql: &str,
        mut compiled: compile::Compiled,
        options: &SubscribeOptions,
    ) -> KalamResult<(Arc<Subscription>, crate::scoped::TableSnapshot)> {
        let hub = &self.hub;
        // The scope's manifest, read now (a file, when it is not cached): the
        // snapshot under the commit lock below then reads no file.
        compiled.scoped.has_cold_rows()?;
        let mut attempts = 0;
        let (guard, table) = loop {
            let guard = (self.db.commit_locks)
                .lock(compiled.table.table_id, compiled.scoped.scope())
                .await;
            match self
                .db
                .catalog
                .table(&compiled.table.namespace, &compiled.table.name)
            {
                Some(current) if Arc::ptr_eq(&current, &compiled.table) => break (guard, current),
                Some(current) if current.table_id == compiled.table.table_id && attempts < 3 => {
                    // Altered since it was compiled: compile against the new definition.
                    drop(guard);
                    attempts += 1;
                    compiled = compile::compile(&self.db, &self.conn.caller, sql, options)?;
                }
                _ => {
                    return Err(KalamError::new(
                        ErrorCode::TableNotFound,
                        format!("table '{}' was dropped", compiled.table.qualified_name()),
                    ));
                }
            }
        };
        let snapshot = compiled.scoped.snapshot()?;
        if let Some(from_seq) = options.from_seq {
            history::check_available(&self.db, &snapshot.view, &table, from_seq)?;
        }
        // Every committed change of the table is at or below it, every later one
        // above: "now", even on a table (or server) idle for a day.
        let start_seq = self.db.seq.reserve_now();
        let sub = Arc::new(Subscription {
            id: id.to_string(),
            conn_id: self.conn.id,
            caller: self.conn.caller.clone(),
            sql: sql.to_string(),
            scope: compiled.scoped.scope().to_string(),
            table,
            plan: compiled.plan,
            start_seq,
            outbox: self.conn.outbox.clone(),
            phase: Mutex::new(Phase::Loading(Vec::new())),
            changes_sent: AtomicU64::new(0),
            created_at: crate::base::now_micros(),
            lane: Mutex::new(None),
            lane_bytes: AtomicUsize::new(0),
        });
        {
            let mut subs = self.conn.subs.lock();
            // Subscribes of one connection admitted together: the id and the limit
            // again.
            room_for(&subs, id, hub.options.max_subscriptions_per_connection)?;
            subs.insert(id.to_string(), sub.clone());
        }
        hub.register(&sub);
        drop(guard);
        let schema: Vec<serde_json::Value> = (sub.plan.fields.iter())
            .map(|f| json!({"name": f.name(), "data_type": crate::results::api_type_name(f)}))
            .collect();
        // Queued before any change can be: the feed holds this subscription's
        // changes until it goes live.
        self.conn
            .outbox
            .push_reply(json!({"type": "subscribed", "id": id, "schema": schema}).to_string())
            .await;
        Ok((sub, snapshot))
    }

    /// `unsubscribe`: `false` when no subscription has this id.
    pub async fn unsubscribe(&self, id: &str) -> bool {
        let sub = self.conn.subs.lock().get(id).cloned();
        match sub {
            Some(sub) => {
                self.hub.end(&sub, None);
                self.reply(json!({"type": "unsubscribed", "id": id}).to_string())
                    .await;
                true
            }
            None => false,
        }
    }
}

impl LiveConnection {
    /// Ends every subscription and closes the socket with `code` after what is
    /// queued (the first close wins).
    pub fn close(&self, code: u16, reason: &str) {
        let hub = &self.hub;
        let subs: Vec<Arc<Subscription>> = self.conn.subs.lock().values().cloned().collect();
        for sub in subs {
            hub.end(&sub, None);
        }
        self.conn.outbox.close(code, reason);
        hub.conns.lock().remove(&self.conn.id);
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.close(1000, "");
    }
}

impl Drop for LiveReceiver {
    /// The socket is gone: whoever waits for room stops waiting.
    fn drop(&mut self) {
        self.outbox.closed.store(true, Ordering::Release);
        self.outbox.room.notify_waiters();
    }
}

/// An `error` message (for subscription `id`, if any) as the socket sends it.
pub fn live_error(id: Option<&str>, error: &KalamError) -> String {
    error_message(id, error)
}

fn schema_changed(table: &TableDef) -> KalamError {
    KalamError::new(
        ErrorCode::SchemaChanged,
        format!(
            "the columns of '{}' changed; subscribe again (from_seq = the last seq received loses nothing)",
            table.qualified_name()
        ),
    )
}

pub(crate) fn lagged() -> KalamError {
    KalamError::new(
        ErrorCode::SubscriptionLagged,
        "the subscriber fell too far behind (its queue is full); subscribe again with from_seq = the last seq received",
    )
}

/// The live hub as a commit observer: the change log (`history.rs`), written in the
/// commit's batch, and the feed of the scope's subscriptions, published after the
/// write under the commit lock.
pub(crate) struct LiveCommits(pub Arc<LiveHub>);

impl CommitObserver for LiveCommits {
    fn wants_changes(&self, table_id: u32, scope: &str) -> bool {
        !self.0.options.history.is_zero() || self.0.feed_for(table_id, scope).is_some()
    }

    fn stage(
        &self,
        batch: &mut kalamdb_store::StoreBatch<'_>,
        table_id: u32,
        changes: &Arc<ChangeSet>,
    ) -> Option<AfterWrite> {
        if !self.0.options.history.is_zero() {
            for change in &changes.changes {
                history::log_change(batch, table_id, &changes.scope, change);
            }
        }
        let feed = self.0.feed_for(table_id, &changes.scope)?;
        let changes = changes.clone();
        Some(Box::new(move || feed.publish(changes)))
    }
}

/// `system.live`: the subscriptions open now — a user's own, every one for dba and
/// above.
pub(crate) struct LiveTable(pub Arc<LiveHub>);

impl crate::system_tables::SystemTable for LiveTable {
    fn name(&self) -> &'static str {
        "live"
    }

    fn batch(
        &self,
        _: &crate::tiers::Tiers,
        caller: &Caller,
    ) -> datafusion::common::Result<datafusion::arrow::record_batch::RecordBatch> {
        use crate::system_tables::{batch, text, timestamp_field, timestamps};
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::datatypes::{DataType, Field};

        let rows = self.0.list(caller);
        batch(
            vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("subscription", DataType::Utf8, false),
                Field::new("connection", DataType::Int64, false),
                Field::new("username", DataType::Utf8, false),
                Field::new("table_name", DataType::Utf8, false),
                Field::new("sql", DataType::Utf8, false),
                timestamp_field("created_at"),
                Field::new("changes_sent", DataType::Int64, false),
            ],
            vec![
                text(rows.iter().map(|r| r.id.clone()).collect()),
                text(rows.iter().map(|r| r.subscription.clone()).collect()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.connection))),
                text(rows.iter().map(|r| r.user.clone()).collect()),
                text(rows.iter().map(|r| r.table.clone()).collect()),
                text(rows.iter().map(|r| r.sql.clone()).collect()),
                timestamps(rows.iter().map(|r| r.created_at).collect()),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.changes_sent))),
            ],
        )
    }
}

impl crate::statements::LiveControl for LiveHub {
    /// `KILL LIVE QUERY 'id'`: by its owner or dba and above.
    fn kill(&self, caller: &Caller, live_id: &str) -> KalamResult<()> {
        let sub = self
            .subscriptions()
            .into_iter()
            .find(|s| s.live_id() == live_id)
            .filter(|s| s.caller.user_id == caller.user_id || allows(caller, Action::EveryLiveQuery))
            .ok_or_else(|| {
                KalamError::new(
                    ErrorCode::LiveQueryNotFound,
                    format!("no live query '{live_id}' (system.live lists them)"),
                )
            })?;
        self.end(
            &sub,
            Some(&KalamError::new(
                ErrorCode::Killed,
                format!("live query '{live_id}' was killed by '{}'", caller.username),
            )),
        );
        Ok(())
    }

    /// A dropped table: its subscriptions end with `TABLE_NOT_FOUND`.
    fn table_dropped(&self, table: &TableDef) {
        let error = KalamError::new(
            ErrorCode::TableNotFound,
            format!("table '{}' was dropped", table.qualified_name()),
        );
        for sub in self.subscriptions() {
            if sub.table.table_id == table.table_id {
                self.end(&sub, Some(&error));
            }
        }
    }

    /// A table whose columns changed (`current` is its new definition): the
    /// subscriptions compiled against the old columns end with `SCHEMA_CHANGED`;
    /// subscribing again with `from_seq` = the last `seq` seen resumes with the new
    /// columns and loses nothing. Called under the table's commit lock, which
    /// registration holds too, so no subscription of the old columns starts after.
    fn table_altered(&self, current: &TableDef) {
        let error = schema_changed(current);
        for sub in self.subscriptions() {
            if sub.table.table_id == current.table_id && sub.table.schema_version != current.schema_version {
                self.end(&sub, Some(&error));
            }
        }
    }

    /// A user dropped, or whose password or role changed: its connections close
    /// (their credentials no longer stand).
    fn user_changed(&self, user_id: &str, reason: &str) {
        let conns: Vec<Arc<ConnState>> = (self.conns.lock().values())
            .filter(|c| c.caller.user_id.as_str() == user_id)
            .cloned()
            .collect();
        let error = KalamError::new(ErrorCode::Unauthorized, reason.to_string());
        for conn in conns {
            let subs: Vec<Arc<Subscription>> = conn.subs.lock().values().cloned().collect();
            for sub in subs {
                self.end(&sub, Some(&error));
            }
            conn.outbox.close(1008, reason);
        }
    }
}
