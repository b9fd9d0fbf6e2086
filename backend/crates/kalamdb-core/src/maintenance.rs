//! The server's one maintenance ticker. Every `policy_check_interval` it runs what the
//! parts of the engine keep up over time, in this order: flush policies and the
//! retention of finished jobs (`jobs`), then — RocksDB work, on the blocking pool — the
//! change log's sweep (`live`) and the removal of expired STREAM rows (`stream`; it
//! takes tables' commit locks). The parts do not call each other for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DbShared;

/// The running ticker; [`Ticker::stop`] ends it, and so does the database going away.
pub(crate) struct Ticker {
    stop: CancellationToken,
    task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl Ticker {
    pub fn start(db: &Arc<DbShared>, every: Duration) -> Ticker {
        let (weak, stop) = (Arc::downgrade(db), CancellationToken::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => return,
                    _ = interval.tick() => {}
                }
                let Some(db) = weak.upgrade() else { return };
                tick(db).await;
            }
        });
        Ticker {
            stop,
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    /// Stops the ticker and waits (up to `wait`) for a tick in progress to end.
    pub async fn stop(&self, wait: Duration) {
        self.stop.cancel();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(wait, task).await;
        }
    }
}

async fn tick(db: Arc<DbShared>) {
    db.jobs.maintain(&db);
    let sweep_history = db.live.sweep_due();
    let swept = tokio::task::spawn_blocking(move || {
        if sweep_history && let Err(e) = crate::live::sweep_history(&db) {
            tracing::warn!("change history sweep failed: {}", e.message);
        }
        crate::stream::sweep_expired(&db)
    })
    .await;
    if let Ok(Err(e)) = swept {
        tracing::warn!("STREAM table sweep failed: {}", e.message);
    }
}
