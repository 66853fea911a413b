//! The cross-process commit feed: `LISTEN` on the schema's channel.
//!
//! Every append and lifecycle change calls `pg_notify` in its transaction,
//! so PostgreSQL delivers the notification when (and only if) it commits,
//! also for appends inside a caller's transaction and from other
//! processes. One task per store listens and wakes the store's
//! [`CommitNotifier`]. When its connection is lost it reports the feed
//! broken (listeners get `FeedError::Broken` once and should poll), then
//! reconnects with a capped backoff and repairs the feed, which wakes every
//! listener (commits may have been missed meanwhile).

use std::time::Duration;

use eskit_core::backend::CommitNotifier;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use crate::dcb::fnv1a;

/// The first wait before reconnecting a lost feed connection.
pub const FEED_RECONNECT_MIN: Duration = Duration::from_millis(50);

/// The longest wait between reconnection attempts.
pub const FEED_RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The channel of a schema: a fixed prefix and a hash, so it stays within
/// PostgreSQL's 63-byte identifier limit for every schema name.
pub(crate) fn channel(schema: &str) -> String {
    format!("eskit_{:016x}", fnv1a(&[b"eskit-feed", schema.as_bytes()]))
}

/// Listens until the store closes or is dropped (`closing` turns true or
/// its sender goes). `ready` is told after the first attempt to listen,
/// whether it worked or not.
pub(crate) async fn listen(
    pool: PgPool,
    channel: String,
    notifier: CommitNotifier,
    mut closing: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = FEED_RECONNECT_MIN;
    let mut broken = false;
    loop {
        if *closing.borrow() {
            return;
        }
        let connected = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(&channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            r = connected => match r {
                Ok(l) => l,
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    if !broken {
                        notifier.break_feed(format!("cannot listen for commits: {e}"));
                        broken = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = closing.changed() => return,
                    }
                    backoff = (backoff * 2).min(FEED_RECONNECT_MAX);
                    continue;
                }
            },
            _ = closing.changed() => return,
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        if broken {
            // Commits may have happened while nobody listened.
            notifier.repair();
        }
        backoff = FEED_RECONNECT_MIN;
        loop {
            tokio::select! {
                r = listener.try_recv() => match r {
                    Ok(Some(_)) => notifier.notify(notifier.latest()),
                    Ok(None) => {
                        notifier.break_feed("the commit feed's connection was lost");
                        break;
                    }
                    Err(e) => {
                        notifier.break_feed(format!("the commit feed failed: {e}"));
                        break;
                    }
                },
                _ = closing.changed() => return,
            }
        }
        broken = true;
    }
}
