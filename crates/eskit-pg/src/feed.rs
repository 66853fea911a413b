//! The cross-process commit feed: `LISTEN` on the schema's channel.
//!
//! Appends inside a caller's transaction and lifecycle changes call
//! `pg_notify` in their transaction, so PostgreSQL delivers the
//! notification when (and only if) it commits. A standalone append
//! announces its commit right after it instead ([`announce`]): a `NOTIFY`
//! inside the transaction takes a database-wide lock held through the
//! commit's WAL flush, which lines up every concurrent notifying commit
//! one flush after another (8 writers ran at a third of the speed of the
//! same appends without it). Commits that land while an announcement is
//! under way share the next one. A process that dies between its commit
//! and the announcement leaves other processes' listeners to their poll
//! fallback for that commit. One task per store listens and wakes the store's
//! [`CommitNotifier`]. When its connection is lost it reports the feed
//! broken (listeners get `FeedError::Broken` once and should poll), then
//! reconnects with a capped backoff and repairs the feed, which wakes every
//! listener (commits may have been missed meanwhile).

use std::time::Duration;

use eskit_core::backend::CommitNotifier;
use eskit_core::event::Position;
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

/// The least time between two announcements of one store: the first
/// commit after a quiet spell is announced at once, the commits that follow
/// within this time share one announcement at its end. Each announcement is
/// a transaction on the server and wakes every listening session and its
/// client; a sequential writer announced every append, which cost about as
/// much server and client work again as the append. Other processes hear
/// of a commit at most this much later (this process's own listeners are
/// woken at the commit).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(5);

/// The announcement: a `NOTIFY` whose commit does not wait for the flush,
/// carrying the newest position the announcing store has committed (or
/// heard of), in decimal.
const ANNOUNCE: &str = "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)";

/// Longest announcement payload read as a position: the decimal digits of
/// `u64::MAX`. Anything else (longer, not a number, another version's
/// empty payload) wakes the listeners without a position.
pub const MAX_ANNOUNCED_DIGITS: usize = 20;

/// The position an announcement carries, if it carries one.
fn announced_position(payload: &str) -> Option<Position> {
    if payload.is_empty() || payload.len() > MAX_ANNOUNCED_DIGITS {
        return None;
    }
    payload.parse::<u64>().ok().map(Position::new)
}

/// Announces this store's standalone commits to other processes: one
/// `NOTIFY` on the schema's channel per wake-up, however many commits woke
/// it meanwhile, at most one per [`ANNOUNCE_INTERVAL`], until the store
/// closes or is dropped. A failed
/// announcement is not repeated (the next commit announces again; the
/// listeners' poll fallback covers the gap).
pub(crate) async fn announce(
    pool: PgPool,
    channel: String,
    notifier: CommitNotifier,
    wake: std::sync::Arc<tokio::sync::Notify>,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            r = closing.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
        if *closing.borrow() {
            return;
        }
        // A `NOTIFY` gets a transaction id and its commit would wait for
        // a WAL flush; notifications do not outlive a server restart
        // anyway, so this one transaction does not wait.
        let newest = notifier.latest().get().to_string();
        let _ = sqlx::query(ANNOUNCE)
            .bind(&channel)
            .bind(newest)
            .execute(&pool)
            .await;
        // Commits meanwhile leave the wake-up's permit set: the next
        // announcement goes out when this pause ends.
        tokio::select! {
            () = tokio::time::sleep(ANNOUNCE_INTERVAL) => {}
            r = closing.changed() => {
                if r.is_err() || *closing.borrow() {
                    return;
                }
            }
        }
    }
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
                    // Another store's commits: their newest position
                    // counts (a subscription's lag reads it), never lowering
                    // what this store has seen.
                    Ok(Some(n)) => notifier.notify(
                        announced_position(n.payload()).unwrap_or_else(|| notifier.latest()),
                    ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_decimal_position_is_read_from_an_announcement() {
        assert_eq!(announced_position("42"), Some(Position::new(42)));
        assert_eq!(
            announced_position(&u64::MAX.to_string()),
            Some(Position::new(u64::MAX))
        );
        for payload in [
            "",
            "-1",
            "4 2",
            "0x10",
            "18446744073709551616",
            "000000000000000000042",
            "∞",
        ] {
            assert_eq!(announced_position(payload), None, "{payload:?}");
        }
    }
}
