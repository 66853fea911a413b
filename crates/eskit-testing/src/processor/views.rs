//! RELIABILITY C4: a state view kept live while writers append, then
//! rebuilt from zero, equals the live one (by a hash of its rows), and
//! both equal the balances computed straight from the log.

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use eskit_core::{
    error::BoxError,
    event::{EventType, ExpectedVersion, NewEvent, RawEvent, StreamName},
    store::{AppendOptions, EventStore, GlobalReader},
};
use eskit_processor::view::{StateView, ViewHandler, rebuild, run_to_head};
use eskit_processor::{Subscription, SubscriptionOptions};

use super::{Parts, ProcessorBackend, ScenarioResult, all_events, log_end, reached};

/// RELIABILITY C4's size.
pub const EVENTS: usize = 50_000;
/// Writers appending while the live view runs.
pub const WRITERS: usize = 2;
/// Events per append.
pub const PER_APPEND: usize = 100;
/// Accounts the events are spread over.
pub const ACCOUNTS: usize = 50;

/// One row of the view: an account and its balance.
pub type Row = (String, i64);

/// The signed amount an event moves.
///
/// # Errors
/// A payload that is not a decimal number, or an unexpected event type.
pub fn amount(e: &RawEvent) -> Result<i64, BoxError> {
    let n: i64 = std::str::from_utf8(&e.payload)?.parse()?;
    match e.event_type.as_str() {
        "Deposited" => Ok(n),
        "Withdrawn" => Ok(-n),
        other => Err(format!("unexpected event type {other}").into()),
    }
}

/// Appends events `first..first + count` in appends of [`PER_APPEND`],
/// spread over [`ACCOUNTS`] accounts (streams `account/a-<n>`), each a
/// deposit or a withdrawal (every third) of 1 to 97.
///
/// # Errors
/// A failed append.
pub async fn write_movements<S: EventStore>(
    store: &S,
    first: usize,
    count: usize,
) -> ScenarioResult {
    let deposited = EventType::from_static("Deposited")?;
    let withdrawn = EventType::from_static("Withdrawn")?;
    let mut i = first;
    while i < first + count {
        let s = StreamName::new("account", format!("a-{}", (i / PER_APPEND) % ACCOUNTS))?;
        let n = PER_APPEND.min(first + count - i);
        let events = (i..i + n)
            .map(|k| {
                let ty = if k % 3 == 0 { &withdrawn } else { &deposited };
                NewEvent::new(ty.clone(), format!("{}", 1 + k % 97).into_bytes())
            })
            .collect();
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        i += n;
    }
    Ok(())
}

/// While the live subscription `run` (with `health`, stopped through
/// `stop`) follows the log, [`WRITERS`] writers append [`EVENTS`] events
/// with [`write_movements`]; once they are done and the subscription has
/// caught up, stops it and returns the end of the log.
pub(crate) async fn write_while_live<S>(
    store: &S,
    name: &str,
    health: &eskit_processor::HealthHandle,
    stop: tokio::sync::oneshot::Sender<()>,
    run: tokio::task::JoinHandle<Result<(), eskit_processor::SubscriptionError>>,
) -> Result<eskit_core::event::GlobalCursor, BoxError>
where
    S: EventStore + GlobalReader + Clone + Send + Sync + 'static,
{
    let per_writer = EVENTS / WRITERS;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                write_movements(&store, w * per_writer, per_writer)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    let head = log_end(store).await?;
    reached(name, health, head).await?;
    let _ = stop.send(());
    run.await??;
    Ok(head)
}

/// A hash of a view's rows, in order.
pub fn hash_rows(rows: &[Row]) -> u64 {
    let mut h = DefaultHasher::new();
    rows.hash(&mut h);
    h.finish()
}

/// The balances the whole log gives, computed straight from it, by
/// account in order.
///
/// # Errors
/// A failed read or an event [`amount`] refuses.
pub async fn expected_balances<R: GlobalReader>(reader: &R) -> Result<Vec<Row>, BoxError> {
    let mut balances = BTreeMap::new();
    for e in all_events(reader).await? {
        *balances.entry(e.stream.to_string()).or_insert(0) += amount(&e)?;
    }
    Ok(balances.into_iter().collect())
}

/// Balances per account, in memory: the state view the C4 scenario keeps
/// (each event's [`amount`] added to its stream's balance).
#[derive(Debug, Default)]
pub struct Balances(Mutex<BTreeMap<String, i64>>);

impl Balances {
    /// The balances, by account in order.
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn rows(&self) -> Result<Vec<Row>, BoxError> {
        let b = self.0.lock().map_err(|_| "poisoned")?;
        Ok(b.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    /// Sets one account's balance (for a test that leaves rubbish behind).
    ///
    /// # Errors
    /// A poisoned lock.
    pub fn set(&self, account: &str, balance: i64) -> Result<(), BoxError> {
        self.0
            .lock()
            .map_err(|_| "poisoned")?
            .insert(account.to_owned(), balance);
        Ok(())
    }
}

impl StateView for Balances {
    async fn reset(&self) -> Result<(), BoxError> {
        self.0.lock().map_err(|_| "poisoned")?.clear();
        Ok(())
    }

    async fn apply(&self, events: &[RawEvent]) -> Result<(), BoxError> {
        let mut b = self.0.lock().map_err(|_| "poisoned")?;
        for e in events {
            *b.entry(e.stream.to_string()).or_insert(0) += amount(e)?;
        }
        Ok(())
    }
}

fn options(name: &str) -> Result<SubscriptionOptions, eskit_processor::SubscriptionError> {
    SubscriptionOptions::new(name)?.with_batch_size(500)
}

/// C4 on `backend`: a state view (balances per account) follows the log
/// through a live subscription, checkpointed in the backend's checkpoint
/// store, while [`WRITERS`] writers append [`EVENTS`] events. Then it is
/// rebuilt in place (reset, checkpoint back to the start, replayed) and a
/// second instance is built from zero under another name: all three hash
/// alike and equal the balances computed from the log. A live run started
/// after the rebuild goes on from its checkpoint.
///
/// # Errors
/// The first check that failed, or a store failure.
pub async fn c4_a_view_rebuilt_from_zero_equals_the_live_one<B: ProcessorBackend>(
    backend: &B,
) -> ScenarioResult {
    let parts = backend.fresh().await?;
    let result = c4(&parts).await;
    backend.close(parts).await;
    result
}

async fn c4<B: ProcessorBackend>(parts: &Parts<B>) -> ScenarioResult {
    let Parts {
        store, checkpoints, ..
    } = parts;
    let live = Arc::new(Balances::default());
    let handler = ViewHandler::new("balances", Arc::clone(&live));
    handler.setup().await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sub = Subscription::new(
        store.clone(),
        checkpoints.clone(),
        options("balances")?,
        handler,
    );
    let health = sub.health();
    let run = tokio::spawn(sub.run(async move {
        let _ = stop_rx.await;
    }));
    let head = write_while_live(store, "balances", &health, stop_tx, run).await?;

    let want = expected_balances(store).await?;
    if want.len() != ACCOUNTS {
        return Err(format!("{} accounts in the log, not {ACCOUNTS}", want.len()).into());
    }
    if live.rows()? != want {
        return Err("the live view misses or repeats an event".into());
    }
    let live_hash = hash_rows(&live.rows()?);

    // Rebuilt in place: reset, then replayed from the start.
    let cursor = rebuild(
        store.clone(),
        checkpoints.clone(),
        options("balances")?,
        ViewHandler::new("balances", Arc::clone(&live)),
    )
    .await?;
    if cursor != head || hash_rows(&live.rows()?) != live_hash {
        return Err(format!("the view rebuilt in place (at {cursor}, head {head}) differs").into());
    }

    // A second instance built from zero under another name.
    let fresh = Arc::new(Balances::default());
    rebuild(
        store.clone(),
        checkpoints.clone(),
        options("balances-2")?,
        ViewHandler::new("balances", Arc::clone(&fresh)),
    )
    .await?;
    if hash_rows(&fresh.rows()?) != live_hash {
        return Err("a view built from zero differs from the live one".into());
    }

    // The checkpoint was left at the head: a live run goes on from there.
    write_movements(store, EVENTS, 1_000).await?;
    let sub = Subscription::new(
        store.clone(),
        checkpoints.clone(),
        options("balances")?,
        ViewHandler::new("balances", Arc::clone(&live)),
    );
    run_to_head(sub).await?;
    if live.rows()? != expected_balances(store).await? {
        return Err("the live run after the rebuild missed or repeated an event".into());
    }
    Ok(())
}
