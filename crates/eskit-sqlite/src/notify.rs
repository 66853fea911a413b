//! Change notification beyond the process: a watcher that polls `PRAGMA
//! data_version` for commits made by other processes to the same file and
//! signals the store's commit feed (core's [`CommitNotifier`], raised in
//! process right after each commit).

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use eskit_core::{CommitNotifier, Position};
use rusqlite::Connection;

use crate::oneshot;

/// Shortest poll interval [`SqliteStore::watch_external_writes`](crate::SqliteStore::watch_external_writes) accepts.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Polls `PRAGMA data_version` on its own connection and signals the store's
/// commit feed when another process committed to the same file. Dropping it
/// stops the thread without waiting; [`ExternalWatcher::shutdown`] waits.
#[derive(Debug)]
pub struct ExternalWatcher {
    stop: Option<mpsc::Sender<()>>,
    exited: Option<oneshot::Receiver<()>>,
}

impl ExternalWatcher {
    pub(crate) fn idle() -> Self {
        Self {
            stop: None,
            exited: None,
        }
    }

    pub(crate) fn start(
        conn: Connection,
        interval: Duration,
        notifier: CommitNotifier,
    ) -> std::io::Result<Self> {
        let (stop, stop_rx) = mpsc::channel::<()>();
        let (exit_tx, exited) = oneshot::channel();
        thread::Builder::new()
            .name("eskit-sqlite-watch".into())
            .spawn(move || {
                watch(&conn, interval, &notifier, &stop_rx);
                drop(conn);
                exit_tx.send(());
            })?;
        Ok(Self {
            stop: Some(stop),
            exited: Some(exited),
        })
    }

    /// Stops polling and waits until the thread has ended.
    ///
    /// # Cancel safety
    /// Cancel safe: the thread stops either way.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(exited) = self.exited.take() {
            // The thread ending without a signal also means it stopped.
            let _ = exited.await;
        }
    }
}

fn watch(
    conn: &Connection,
    interval: Duration,
    notifier: &CommitNotifier,
    stop: &mpsc::Receiver<()>,
) {
    let probe = |conn: &Connection| -> rusqlite::Result<(i64, i64, i64)> {
        let dv: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let (pos, change): (i64, i64) = conn.query_row(
            "SELECT coalesce((SELECT max(position) FROM eskit_events), 0), \
             coalesce((SELECT max(id) FROM eskit_changes), 0)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((dv, pos, change))
    };
    let mut last = probe(conn).ok();
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(interval) {
        // A failed probe (the file is locked or damaged) is retried at the
        // next tick; readers see the failure themselves.
        let Ok(now) = probe(conn) else { continue };
        let changed = match last {
            None => true,
            Some((dv, pos, change)) => {
                now.0 != dv
                    && (now.1 != pos
                        || now.2 != change
                        || u64::try_from(now.1).unwrap_or(0) > notifier.latest().get())
            }
        };
        last = Some(now);
        if changed {
            notifier.notify(Position::new(u64::try_from(now.1).unwrap_or(0)));
        }
    }
}
