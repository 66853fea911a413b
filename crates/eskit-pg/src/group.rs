//! Group commit: standalone appends that wait at the same time are written
//! by one task in one transaction, each keeping its own outcome.
//!
//! The task takes what queued up (at most [`MAX_GROUP_APPENDS`], all of
//! one tenant), opens one transaction and runs each append in it with the
//! same statements, locks and checks as an append alone, then commits once:
//! one WAL flush and one `NOTIFY` for the group, and two statements per
//! append instead of four.
//!
//! Outcomes:
//! - an append refused by a check (version conflict, failed condition,
//!   stream state, another tenant's stream, duplicate event id found before
//!   the insert, idempotency mismatch) wrote nothing but perhaps the empty
//!   head row of a stream it would have created, which is deleted again;
//!   the others go on;
//! - an idempotent retry is answered from the stored events;
//! - an append whose stream was last written by a transaction with a
//!   higher id than the group's (stream order, see `docs/ordering.md`) runs
//!   again alone after the group committed, as a refused append alone
//!   starts over;
//! - any failure that may have aborted the transaction (a statement error,
//!   a lost connection, a deadlock between groups) rolls the group back and
//!   runs each of its appends again alone, so each gets the outcome it has
//!   on its own. A failed commit is reported to every append of the group
//!   (the outcome is unknown, as for an append alone).
//!
//! Callers are answered after the commit. A caller that stops waiting does
//! not stop its append (the task runs it to the end).

use std::collections::VecDeque;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use eskit_core::error::StoreError;
use eskit_core::event::{AppendResult, ExpectedVersion, NewEvent, StreamName, TenantId};
use eskit_core::store::AppendOptions;
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::store_error;
use crate::store::{AppendFail, Inner, append_alone, append_in_tx};

/// Most appends one group transaction holds.
pub const MAX_GROUP_APPENDS: usize = 64;

/// Most appends waiting for the group task; callers beyond it wait to
/// enqueue.
pub(crate) const GROUP_QUEUE: usize = 1024;

/// One append waiting for the group task.
pub(crate) struct Request {
    pub(crate) tenant: String,
    pub(crate) tenant_id: Option<TenantId>,
    pub(crate) stream: StreamName,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) options: AppendOptions,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

impl Request {
    fn answer(self, r: Result<AppendResult, StoreError>) {
        // The caller may have stopped waiting; the append is done anyway.
        let _ = self.reply.send(r);
    }
}

/// Runs groups until every sender is gone (the store was dropped) or the
/// store is gone.
pub(crate) async fn writer(mut rx: mpsc::Receiver<Request>, inner: Weak<Inner>) {
    let mut pending: VecDeque<Request> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(r) => pending.push_back(r),
                None => return,
            }
        }
        while pending.len() < 2 * MAX_GROUP_APPENDS {
            match rx.try_recv() {
                Ok(r) => pending.push_back(r),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            for r in pending.drain(..) {
                r.answer(Err(StoreError::Closed));
            }
            return;
        };
        // One tenant per transaction (a tenant may be set per transaction);
        // the others keep their place in the queue.
        let tenant = pending
            .front()
            .map(|r| r.tenant.clone())
            .unwrap_or_default();
        let mut group = Vec::new();
        let mut rest = VecDeque::with_capacity(pending.len());
        for r in pending.drain(..) {
            if group.len() < MAX_GROUP_APPENDS && r.tenant == tenant {
                group.push(r);
            } else {
                rest.push_back(r);
            }
        }
        pending = rest;
        if inner.closed.load(Ordering::SeqCst) {
            for r in group {
                r.answer(Err(StoreError::Closed));
            }
            continue;
        }
        run_group(&inner, group).await;
    }
}

/// Whether `e` is a check's refusal, made before anything was written
/// (as opposed to a statement's error, which aborts the transaction).
fn refused_before_write(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::WrongExpectedVersion { .. }
            | StoreError::StreamDeleted { .. }
            | StoreError::StreamArchived { .. }
            | StoreError::StreamNotFound { .. }
            | StoreError::InvalidLifecycle { .. }
            | StoreError::WrongTenant { .. }
            | StoreError::IdempotencyConflict { .. }
            | StoreError::DuplicateEventId { .. }
            | StoreError::ConditionFailed { .. }
            | StoreError::Validation(_)
    )
}

enum Outcome {
    Done(Result<AppendResult, StoreError>),
    /// Runs again alone after the group.
    Alone,
}

async fn run_group(inner: &Inner, group: Vec<Request>) {
    if group.len() == 1 {
        for r in group {
            let out = alone(inner, &r).await;
            r.answer(out);
        }
        return;
    }
    match grouped(inner, &group).await {
        Ok(outcomes) => {
            let mut later = Vec::new();
            for (r, o) in group.into_iter().zip(outcomes) {
                match o {
                    Outcome::Done(res) => r.answer(res),
                    Outcome::Alone => later.push(r),
                }
            }
            for r in later {
                let out = alone(inner, &r).await;
                r.answer(out);
            }
        }
        Err(GroupFail::Commit(e)) => {
            for r in group {
                r.answer(Err(e.clone_kind()));
            }
        }
        Err(GroupFail::RolledBack) => {
            for r in group {
                let out = alone(inner, &r).await;
                r.answer(out);
            }
        }
    }
}

async fn alone(inner: &Inner, r: &Request) -> Result<AppendResult, StoreError> {
    append_alone(
        inner,
        &r.tenant,
        r.tenant_id.as_ref(),
        &r.stream,
        r.expected,
        &r.events,
        &r.options,
    )
    .await
}

enum GroupFail {
    /// Nothing was committed; every append runs again alone.
    RolledBack,
    /// The commit failed: the outcome is unknown.
    Commit(StoreError),
}

trait CloneKind {
    fn clone_kind(&self) -> StoreError;
}

impl CloneKind for StoreError {
    /// The same kind of error for every append of a failed group commit.
    fn clone_kind(&self) -> StoreError {
        match self {
            StoreError::Closed => StoreError::Closed,
            StoreError::Unavailable { .. } => {
                StoreError::unavailable(format!("the group commit failed: {self}"))
            }
            StoreError::TimedOut { .. } => {
                StoreError::timed_out(format!("the group commit failed: {self}"))
            }
            _ => StoreError::internal(format!("the group commit failed: {self}")),
        }
    }
}

async fn grouped(inner: &Inner, group: &[Request]) -> Result<Vec<Outcome>, GroupFail> {
    let Ok(mut conn) = inner.pool.acquire().await else {
        return Err(GroupFail::RolledBack);
    };
    let Ok(mut tx) = conn.begin().await else {
        return Err(GroupFail::RolledBack);
    };
    let mut outcomes = Vec::with_capacity(group.len());
    for r in group {
        let res = append_in_tx(
            inner,
            &r.tenant,
            r.tenant_id.as_ref(),
            &mut tx,
            &r.stream,
            r.expected,
            &r.events,
            &r.options,
            false,
        )
        .await;
        match res {
            Ok(ok) => outcomes.push(Outcome::Done(Ok(ok))),
            Err(AppendFail::Behind { .. }) => outcomes.push(Outcome::Alone),
            Err(AppendFail::Store(e)) if refused_before_write(&e) => {
                // A refused append to a stream it would have created left
                // that stream's empty head row behind: remove it.
                let (t, i) = (
                    r.stream.stream_type().as_str(),
                    r.stream.stream_id().as_str(),
                );
                let cleaned = sqlx::query(&inner.sql.drop_empty_head)
                    .bind(r.tenant.as_str())
                    .bind(t)
                    .bind(i)
                    .execute(&mut *tx)
                    .await;
                if cleaned.is_err() {
                    let _ = tx.rollback().await;
                    return Err(GroupFail::RolledBack);
                }
                outcomes.push(Outcome::Done(Err(e)));
            }
            Err(_) => {
                let _ = tx.rollback().await;
                return Err(GroupFail::RolledBack);
            }
        }
    }
    if let Err(e) = tx.commit().await {
        return Err(GroupFail::Commit(store_error(e)));
    }
    let mut last = None;
    for o in &outcomes {
        if let Outcome::Done(Ok(r)) = o
            && !r.deduplicated
            && let Some(rec) = r.records.last()
        {
            inner.last_commit.fetch_max(rec.tx, Ordering::AcqRel);
            last = last.max(Some(r.last_position()));
        }
    }
    if let Some(p) = last {
        inner.notifier.notify(p);
        inner.announce.notify_one();
    }
    Ok(outcomes)
}
