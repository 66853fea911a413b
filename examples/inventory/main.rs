//! Stock reservations on tokio: the SQLite store opened from async code
//! with `SqliteStore::connect`, events appended and loaded with `.await`,
//! and orders from eight tasks at once through one `CommandHandler`, whose
//! conflict retry settles their race for the same stream.
//!
//! Run with `cargo run --example inventory` (a fresh temporary database).

#![allow(clippy::print_stdout)] // an example talks to its user

use std::sync::Arc;

use eskit_codec::JsonCodec;
use eskit_core::{
    event::{ExpectedVersion, StreamName},
    handler::{CommandHandler, Decider, HandleError, RetryPolicy},
    typed::{EventSchema, TypedStore},
};
use eskit_sqlite::{SqliteOptions, SqliteStore};
use serde::{Deserialize, Serialize};

/// What happened to an item's stock. Stored as JSON under the variant's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum StockEvent {
    Received { quantity: u32 },
    Reserved { order: String, quantity: u32 },
}
eskit_codec::serde_domain_event!(StockEvent);

/// An order asking for units of the item.
struct Reserve {
    order: String,
    quantity: u32,
}

/// Why a reservation is refused.
#[derive(Debug)]
struct NotEnough {
    available: u32,
    requested: u32,
}

impl std::fmt::Display for NotEnough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requested but only {} available",
            self.requested, self.available
        )
    }
}

impl std::error::Error for NotEnough {}

/// The units of one item not yet reserved.
struct Stock;

impl Decider for Stock {
    type State = u32;
    type Command = Reserve;
    type Event = StockEvent;
    type Error = NotEnough;

    fn initial_state(&self) -> u32 {
        0
    }

    fn decide(&self, available: &u32, cmd: &Reserve) -> Result<Vec<StockEvent>, NotEnough> {
        if cmd.quantity > *available {
            return Err(NotEnough {
                available: *available,
                requested: cmd.quantity,
            });
        }
        Ok(vec![StockEvent::Reserved {
            order: cmd.order.clone(),
            quantity: cmd.quantity,
        }])
    }

    fn evolve(&self, available: u32, event: &StockEvent) -> u32 {
        match event {
            StockEvent::Received { quantity } => available.saturating_add(*quantity),
            StockEvent::Reserved { quantity, .. } => available.saturating_sub(*quantity),
        }
    }
}

const ORDERS: u32 = 8;
const UNITS_PER_ORDER: u32 = 3;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("eskit-inventory-{}.db", std::process::id()));
    // `connect` does the blocking part of opening on a thread of its own, so
    // no runtime thread waits for the file; every other call of the store
    // runs on the store's threads too.
    let backend = SqliteStore::connect(SqliteOptions::file(&path)).await?;
    let store = TypedStore::new(backend.clone(), EventSchema::new(JsonCodec));
    println!("inventory on {}", path.display());

    let widgets = StreamName::new("stock", "widget")?;
    store
        .append(
            &widgets,
            ExpectedVersion::NoStream,
            vec![
                StockEvent::Received { quantity: 12 },
                StockEvent::Received { quantity: 8 },
            ],
        )
        .await?;
    for e in store.load(&widgets).await? {
        println!("{widgets} version {}: {:?}", e.version, e.data);
    }

    // Every order reads the stock, decides and appends with the version it
    // read; the losers of a race for the stream get a conflict, and the
    // handler retries them on the new state.
    let handler = Arc::new(
        CommandHandler::builder(Stock, store.clone())
            .with_conflict_retry(RetryPolicy::new(50)?)
            .build()?,
    );
    let tasks: Vec<_> = (1..=ORDERS)
        .map(|i| {
            let handler = Arc::clone(&handler);
            let widgets = widgets.clone();
            tokio::spawn(async move {
                let cmd = Reserve {
                    order: format!("order-{i}"),
                    quantity: UNITS_PER_ORDER,
                };
                let outcome = handler.handle(&widgets, &cmd).await;
                (cmd.order, outcome)
            })
        })
        .collect();
    for task in tasks {
        let (order, outcome) = task.await?;
        match outcome {
            Ok(done) => println!(
                "{order}: reserved {UNITS_PER_ORDER}, {} left after version {}",
                done.state, done.version
            ),
            Err(HandleError::Rejected(why)) => println!("{order}: refused: {why}"),
            Err(e) => return Err(e.into()),
        }
    }
    let (left, version) = handler.load_state(&widgets).await?;
    println!("{left} widgets left after {version} events");

    drop(handler);
    drop(store);
    // The last handle's close waits until the store's threads have closed
    // the file, so it can be removed right after.
    backend.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
