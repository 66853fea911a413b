//! The command workload on SQLite: a [`CommandHandler`] over a JSON
//! [`TypedStore`] handling one command on a stream of 1,000 events (load,
//! decode, fold, decide, encode, append with the expected version), next to
//! the same steps hand-written with rusqlite and serde_json on the caller's
//! thread:
//!
//! - **C1 command**: the baseline runs `SELECT version, payload FROM events
//!   WHERE stream = ? ORDER BY version`, decodes each payload with
//!   `serde_json::from_slice` and folds it, decides, encodes the new event
//!   with `serde_json::to_vec`, then appends it as the lean baseline does
//!   (`BEGIN IMMEDIATE`, the version check, `INSERT`, `COMMIT`) expecting
//!   the version it loaded.
//!
//! Both sides handle the same number of commands per round (so both streams
//! grow alike, from 1,000 events), in the same WAL and synchronous settings.
//! Each round runs the store, then the baseline; the ratio is the median of
//! the per-round commands/s ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eskit_codec::JsonCodec;
use eskit_core::{
    error::BoxError,
    event::{ExpectedVersion, StreamName},
    handler::{CommandHandler, Decider},
    rt::block_on,
    typed::{EventSchema, TypedStore},
};
use eskit_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use serde::{Deserialize, Serialize};

use crate::dcb::DcbRow;
use crate::hop::{Hop, HopBaseline};
use crate::{RusqliteBaseline, append_sync};

/// Events on the stream before the first command.
const SEEDED: u64 = 1_000;
/// Commands handled per round and side, at most.
const COMMANDS: u64 = 200;

/// What happened to an order: about 200 bytes of JSON, like the other
/// workloads' event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    ItemAdded {
        order_id: String,
        sku: String,
        qty: u32,
        price_cents: u64,
        currency: String,
        added_at: String,
        note: String,
    },
}
eskit_codec::serde_domain_event!(OrderEvent);

/// Adds an item to the order.
#[derive(Debug, Clone)]
struct AddItem {
    n: u64,
}

/// Why an item is refused.
#[derive(Debug)]
struct TooManyItems;

impl std::fmt::Display for TooManyItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the order has too many items")
    }
}

impl std::error::Error for TooManyItems {}

#[derive(Debug, Default)]
struct OrderState {
    items: u64,
    total_cents: u64,
}

/// Items an order may hold; the bench never reaches it, but the decision
/// reads the folded state.
const MAX_ITEMS: u64 = 1_000_000;

struct Order;

impl Decider for Order {
    type State = OrderState;
    type Command = AddItem;
    type Event = OrderEvent;
    type Error = TooManyItems;

    fn initial_state(&self) -> OrderState {
        OrderState::default()
    }

    fn decide(&self, s: &OrderState, cmd: &AddItem) -> Result<Vec<OrderEvent>, TooManyItems> {
        if s.items >= MAX_ITEMS {
            return Err(TooManyItems);
        }
        Ok(vec![item(cmd.n)])
    }

    fn evolve(&self, mut s: OrderState, e: &OrderEvent) -> OrderState {
        let OrderEvent::ItemAdded {
            qty, price_cents, ..
        } = e;
        s.items += 1;
        s.total_cents += u64::from(*qty) * price_cents;
        s
    }
}

fn item(n: u64) -> OrderEvent {
    OrderEvent::ItemAdded {
        order_id: "order-000000000042".to_owned(),
        sku: format!("SKU-{:05}", n % 100_000),
        qty: 1 + (n % 3) as u32,
        price_cents: 1999,
        currency: "EUR".to_owned(),
        added_at: "2026-12-01T09:00:00Z".to_owned(),
        note: "gift wrap, deliver to the side door, ring twice".to_owned(),
    }
}

/// The hand-written command: load, decode and fold, decide, encode, append
/// expecting the loaded version.
fn raw_command(c: &mut rusqlite::Connection, stream: &str, cmd: &AddItem) -> Result<(), BoxError> {
    let (state, version) = {
        let mut stmt = c.prepare_cached(
            "SELECT version, payload FROM events WHERE stream = ?1 ORDER BY version",
        )?;
        let mut rows = stmt.query([stream])?;
        let (mut state, mut version) = (Order.initial_state(), 0i64);
        while let Some(r) = rows.next()? {
            version = r.get(0)?;
            let e: OrderEvent = serde_json::from_slice(r.get_ref(1)?.as_blob()?)?;
            state = Order.evolve(state, &e);
        }
        (state, version)
    };
    let payloads = Order
        .decide(&state, cmd)?
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<Vec<_>, _>>()?;
    if !append_sync(c, stream, Some(u64::try_from(version)?), &payloads)? {
        return Err("the baseline's command met a conflict".into());
    }
    Ok(())
}

/// The command with the baseline behind a hop, as the store reaches its
/// threads: the load runs on the baseline's thread and its payloads cross
/// to the caller, which decodes, folds and decides; the append crosses back.
fn hop_command(hop: &HopBaseline, stream: &'static str, cmd: &AddItem) -> Result<(), BoxError> {
    let (version, payloads) = block_on(hop.call(move |b| {
        b.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT version, payload FROM events WHERE stream = ?1 ORDER BY version",
            )?;
            let mut rows = stmt.query([stream])?;
            let (mut version, mut payloads) = (0i64, Vec::new());
            while let Some(r) = rows.next()? {
                version = r.get(0)?;
                payloads.push(r.get_ref(1)?.as_blob()?.to_vec());
            }
            Ok((version, payloads))
        })
    }))?;
    let mut state = Order.initial_state();
    for p in &payloads {
        let e: OrderEvent = serde_json::from_slice(p)?;
        state = Order.evolve(state, &e);
    }
    let new = Order
        .decide(&state, cmd)?
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<Vec<_>, _>>()?;
    let expected = u64::try_from(version)?;
    let appended =
        block_on(hop.call(move |b| b.with(|c| append_sync(c, stream, Some(expected), &new))))?;
    if !appended {
        return Err("the hop baseline's command met a conflict".into());
    }
    Ok(())
}

/// Seeds `SEEDED` events on the baseline's stream.
fn seed_baseline(base: &RusqliteBaseline, stream: &str) -> Result<(), BoxError> {
    base.with(|c| {
        for b in 0..SEEDED / 100 {
            let payloads = (b * 100..(b + 1) * 100)
                .map(|i| serde_json::to_vec(&item(i)))
                .collect::<Result<Vec<_>, _>>()?;
            append_sync(c, stream, None, &payloads)?;
        }
        Ok(())
    })
}

/// Runs up to `ops` operations within the budget; returns (ops, elapsed).
fn timed(
    budget: Duration,
    ops: u64,
    mut op: impl FnMut(u64) -> Result<(), BoxError>,
) -> Result<f64, BoxError> {
    let start = Instant::now();
    let mut done = 0;
    while done < ops && (done == 0 || start.elapsed() < budget) {
        op(done)?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// Commands/s of the handler over a fresh store at `path`.
fn handler_commands(
    path: PathBuf,
    sync: Synchronous,
    caller_thread: bool,
    budget: Duration,
) -> Result<f64, BoxError> {
    let store = SqliteStore::open_with(
        SqliteOptions::file(path)
            .with_synchronous(sync)
            .with_calls_on_caller_thread(caller_thread),
    )?;
    let typed = TypedStore::new(store.clone(), EventSchema::new(JsonCodec));
    let stream = StreamName::new("order", "42")?;
    for b in 0..SEEDED / 100 {
        let events = (b * 100..(b + 1) * 100).map(item).collect();
        block_on(typed.append(&stream, ExpectedVersion::Any, events))?;
    }
    let handler = CommandHandler::new(Order, typed);
    let done = timed(budget, COMMANDS, |i| {
        block_on(handler.handle(&stream, &AddItem { n: SEEDED + i }))?;
        Ok(())
    })?;
    block_on(store.close());
    Ok(done)
}

/// One round on fresh files in `dir`: commands/s of the store, of the
/// baseline, of the baseline behind a hop, and of the store with its calls
/// on the caller's thread.
fn round(dir: &Path, n: u32, sync: Synchronous, budget: Duration) -> Result<[f64; 4], BoxError> {
    let eskit = handler_commands(dir.join(format!("cmd-eskit-{n}.db")), sync, false, budget)?;

    let base = RusqliteBaseline::create(dir.join(format!("cmd-baseline-{n}.db")), sync)?;
    let raw_stream = "order/42";
    seed_baseline(&base, raw_stream)?;
    let baseline = base.with(|c| {
        timed(budget, COMMANDS, |i| {
            raw_command(c, raw_stream, &AddItem { n: SEEDED + i })
        })
    })?;
    drop(base);

    let hopped = RusqliteBaseline::create(dir.join(format!("cmd-hop-{n}.db")), sync)?;
    seed_baseline(&hopped, raw_stream)?;
    let hop = Hop::new(hopped)?;
    let behind_hop = timed(budget, COMMANDS, |i| {
        hop_command(&hop, raw_stream, &AddItem { n: SEEDED + i })
    })?;
    drop(hop);
    let caller = handler_commands(dir.join(format!("cmd-caller-{n}.db")), sync, true, budget)?;
    Ok([eskit, baseline, behind_hop, caller])
}

/// Runs `rounds` rounds of C1.
pub(crate) fn run(
    dir: &Path,
    sync: Synchronous,
    budget: Duration,
    rounds: u32,
) -> Result<DcbRow, BoxError> {
    let mut row = DcbRow::new(
        "C1",
        "command (load, decode, fold, decide, append) on a 1,000-event stream",
    );
    for n in 0..rounds {
        let [a, b, c, d] = round(dir, n, sync, budget)?;
        row.eskit.push(a);
        row.baseline.push(b);
        row.hop.push(c);
        row.caller.push(d);
    }
    Ok(row)
}
