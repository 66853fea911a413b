//! The bank's balances as a live read model in the store's SQLite file,
//! kept exactly once by a subscription, plus a processor that reacts to
//! large withdrawals, and a zero-downtime rebuild of the read model at the
//! end.
//!
//! Run with `cargo run --example bank_live` (a fresh temporary database).
//! It stops by itself once both subscriptions have caught up.

#![allow(clippy::print_stdout)] // an example talks to its user

use std::sync::Arc;
use std::time::Duration;

use eskit_codec::JsonCodec;
use eskit_core::{
    error::BoxError,
    event::{
        EventType, ExpectedVersion, GlobalCursor, NewEvent, Principal, RawEvent, RecordedEvent,
        StreamName,
    },
    store::{AppendOptions, EventStore, GlobalReader, ReadOptions},
    typed::{Dispatcher, EventSchema, TypedStore},
};
use eskit_processor::{
    HealthHandle, Subscription, SubscriptionOptions, SubscriptionState, TypedHandlers,
    notifier::{ChangeNotifier, NotifierClosed},
    rebuild::rebuild_in_shadow,
    view::NotifyingSink,
};
use eskit_sqlite::{
    SqliteStore, WriteTx,
    read_model::{SqliteView, Tables},
};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// A withdrawal of at least this much is flagged for review.
const LARGE_WITHDRAWAL: u64 = 1_000;
/// The longest the demo waits for its subscriptions to catch up.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);
/// What the processor appends for a large withdrawal.
const FLAGGED: &str = "LargeWithdrawalFlagged";

/// What happened to an account. Stored as JSON under the variant's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}
eskit_codec::serde_domain_event!(AccountEvent);

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The balance read model: one row per account, written in the
/// transaction that also stores the subscription's cursor.
struct BalanceView {
    schema: Arc<EventSchema<AccountEvent>>,
}

impl SqliteView for BalanceView {
    fn tables(&self) -> &[&'static str] {
        &["balances"]
    }

    fn create(&self, conn: &Connection, t: &Tables) -> Result<(), BoxError> {
        let balances = t.name("balances");
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {balances} (
                 account TEXT PRIMARY KEY,
                 owner   TEXT NOT NULL DEFAULT '',
                 balance INTEGER NOT NULL DEFAULT 0
             )"
        ))?;
        Ok(())
    }

    fn apply(&self, tx: &mut WriteTx<'_>, t: &Tables, events: &[RawEvent]) -> Result<(), BoxError> {
        let mut upsert = tx.connection().prepare_cached(&format!(
            "INSERT INTO {} (account, owner, balance) VALUES (?1, ?2, ?3)
             ON CONFLICT (account) DO UPDATE SET
                 owner = CASE WHEN ?2 = '' THEN owner ELSE ?2 END,
                 balance = balance + ?3",
            t.name("balances")
        ))?;
        for raw in events {
            // Events of other types (the processor's flags) are not ours.
            let Some(e) = self.schema.decode_if_mine(raw.clone())? else {
                continue;
            };
            let account = e.stream.stream_id().to_string();
            let (owner, delta) = match &e.data {
                AccountEvent::Opened { owner } => (owner.as_str(), 0),
                AccountEvent::Deposited { amount } => ("", to_i64(*amount)),
                AccountEvent::Withdrawn { amount } => ("", -to_i64(*amount)),
            };
            upsert.execute((&account, owner, delta))?;
        }
        Ok(())
    }
}

/// The processor's context: where it records what it flagged.
#[derive(Clone)]
struct Review {
    store: SqliteStore,
}

impl Review {
    /// Flags a large withdrawal: one event on the account's review stream,
    /// caused by the withdrawal (its metadata continues the withdrawal's
    /// correlation), and appended once however often the withdrawal is
    /// delivered (the idempotency key is the withdrawal's id).
    async fn flag(&self, e: &RecordedEvent<AccountEvent>, amount: u64) -> Result<(), BoxError> {
        let stream = StreamName::new("review", e.stream.stream_id())?;
        let payload = format!("{{\"withdrawn\":{amount},\"version\":{}}}", e.version);
        let flag = NewEvent::new(EventType::from_static(FLAGGED)?, payload.into_bytes());
        let options = AppendOptions::new()
            .with_idempotency_key(format!("flag-{}", e.id))
            .with_metadata(
                e.metadata
                    .continue_from(e.id, Principal::automation("large-withdrawals")),
            );
        self.store
            .append(&stream, ExpectedVersion::Any, vec![flag], options)
            .await?;
        println!(
            "  processor: flagged {} withdrawing {amount}",
            e.stream.stream_id()
        );
        Ok(())
    }
}

async fn head(store: &SqliteStore) -> Result<GlobalCursor, BoxError> {
    let mut after = GlobalCursor::START;
    loop {
        let page = store.read(ReadOptions::new(after, 500)).await?;
        if page.events.is_empty() {
            return Ok(after);
        }
        after = page.next;
    }
}

/// Waits until a subscription is live at `target` or later.
async fn caught_up(health: &HealthHandle, target: GlobalCursor) -> Result<(), BoxError> {
    let wait = async {
        loop {
            let h = health.snapshot();
            if h.state == SubscriptionState::Stopped {
                return Err::<(), BoxError>(
                    format!("{} stopped: {:?}", h.name, h.last_error).into(),
                );
            }
            if h.state == SubscriptionState::Live && h.cursor >= target {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(CATCH_UP_DEADLINE, wait)
        .await
        .map_err(|_| format!("{} did not catch up", health.snapshot().name))?
}

type Rows = Vec<(String, String, i64)>;

async fn balances(model: &eskit_sqlite::SqliteReadModel<BalanceView>) -> Result<Rows, BoxError> {
    Ok(model
        .query(|c| {
            let mut s =
                c.prepare("SELECT account, owner, balance FROM balances ORDER BY account")?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .await?)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let path = std::env::temp_dir().join(format!("eskit-bank-live-{}.db", std::process::id()));
    let store = SqliteStore::open(&path)?;
    let schema = Arc::new(EventSchema::new(JsonCodec));
    let accounts = TypedStore::new(store.clone(), EventSchema::new(JsonCodec));
    println!("bank on {}", path.display());

    // The read model and its live subscription, announcing each page.
    let model = store.read_model(
        "balances",
        BalanceView {
            schema: Arc::clone(&schema),
        },
    )?;
    model.setup().await?;
    let notifier = ChangeNotifier::new();
    let sink = NotifyingSink::new(model.sink(), notifier.clone(), "balances");
    let live = Subscription::with_sink(store.clone(), sink, SubscriptionOptions::new("balances")?);

    // The processor: typed handlers over the account events only.
    let handlers = TypedHandlers::new(
        Dispatcher::new().on(
            Arc::clone(&schema),
            |e: RecordedEvent<AccountEvent>, review: Review| async move {
                match e.data {
                    AccountEvent::Withdrawn { amount } if amount >= LARGE_WITHDRAWAL => {
                        review.flag(&e, amount).await
                    }
                    _ => Ok(()),
                }
            },
        ),
        Review {
            store: store.clone(),
        },
    );
    let processor = Subscription::new(
        store.clone(),
        store.checkpoints(),
        SubscriptionOptions::new("large-withdrawals")?
            .with_event_types(handlers.event_types())
            .with_checkpoint_every(1)?,
        handlers,
    );

    // A screen showing Alice's balance, re-read whenever her account changes
    // (what a server-sent-events handler does).
    let screen = {
        let (mut alice, model) = (notifier.watch("balances", "account/alice"), model.clone());
        tokio::spawn(async move {
            loop {
                match alice.changed().await {
                    Ok(seq) => {
                        let rows = balances(&model).await?;
                        if let Some((_, owner, balance)) = rows.iter().find(|r| r.0 == "alice") {
                            println!("  screen: {owner}'s balance is {balance} (change {seq})");
                        }
                    }
                    Err(NotifierClosed) => return Ok::<(), BoxError>(()),
                }
            }
        })
    };

    let (live_health, processor_health) = (live.health(), processor.health());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let live = tokio::spawn(live.run(stopped(stop_rx.clone())));
    let processor = tokio::spawn(processor.run(stopped(stop_rx)));

    let alice = StreamName::new("account", "alice")?;
    let bob = StreamName::new("account", "bob")?;
    let activity = [
        (
            &alice,
            AccountEvent::Opened {
                owner: "Alice".into(),
            },
        ),
        (
            &bob,
            AccountEvent::Opened {
                owner: "Bob".into(),
            },
        ),
        (&alice, AccountEvent::Deposited { amount: 5_000 }),
        (&bob, AccountEvent::Deposited { amount: 800 }),
        (&alice, AccountEvent::Withdrawn { amount: 120 }),
        (&alice, AccountEvent::Withdrawn { amount: 2_500 }),
        (&bob, AccountEvent::Withdrawn { amount: 300 }),
        (&bob, AccountEvent::Deposited { amount: 1_700 }),
        (&bob, AccountEvent::Withdrawn { amount: 1_200 }),
    ];
    for (account, event) in activity {
        println!("{account}: {event:?}");
        accounts
            .append(account, ExpectedVersion::Any, vec![event])
            .await?;
        // Give the screen a moment to show each step.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The processor catches up first (its flags extend the log), then the
    // read model catches up with everything.
    caught_up(&processor_health, head(&store).await?).await?;
    caught_up(&live_health, head(&store).await?).await?;
    let _ = stop_tx.send(true);
    live.await??;
    processor.await??;

    let before = balances(&model).await?;
    let cursor = model.cursor().await?.unwrap_or(GlobalCursor::START);
    println!("\nbalances (cursor {cursor}):");
    for (account, owner, balance) in &before {
        println!("  {account:<8} {owner:<8} {balance:>6}");
    }
    let flagged = store
        .read(
            ReadOptions::new(GlobalCursor::START, 100)
                .with_event_types([EventType::from_static(FLAGGED)?]),
        )
        .await?;
    println!("flagged for review: {}", flagged.events.len());
    for e in &flagged.events {
        println!(
            "  {} {} (caused by {})",
            e.stream,
            String::from_utf8_lossy(&e.payload),
            e.metadata.causation_id().unwrap_or("?")
        );
    }

    // Rebuilt from zero in shadow tables while the old ones keep serving,
    // then swapped in atomically.
    let cursor =
        rebuild_in_shadow(store.clone(), &model, SubscriptionOptions::new("balances")?).await?;
    let after = balances(&model).await?;
    println!(
        "\nrebuilt in a shadow and swapped in at cursor {cursor}: {}",
        if after == before {
            "the same balances"
        } else {
            "DIFFERENT balances"
        }
    );

    notifier.close();
    screen.await??;
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if after != before || flagged.events.len() != 2 {
        return Err("the demo did not end as expected".into());
    }
    Ok(())
}
