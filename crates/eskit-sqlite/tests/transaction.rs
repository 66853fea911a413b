//! Appends, checkpoints and the caller's own writes in one transaction
//! (`SqliteStore::write_transaction`), on real files.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use common::{TempDir, TestResult, event, stream};
use eskit_core::{
    error::StoreError,
    event::{EventId, ExpectedVersion, GlobalCursor, Position, Version},
    rt::block_on,
    store::{AppendOptions, CheckpointStore, EventStore, GlobalReader, Listener, ReadOptions},
};
use eskit_sqlite::{SqliteStore, TxError, WriteTx};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn open(dir: &TempDir) -> Result<SqliteStore, Box<dyn std::error::Error>> {
    let store = SqliteStore::open(dir.file("events.db"))?;
    block_on(store.write_transaction(|tx| {
        tx.connection()
            .execute_batch("CREATE TABLE orders (id TEXT PRIMARY KEY, total INTEGER NOT NULL)")
    }))?;
    Ok(store)
}

fn orders(store: &SqliteStore) -> Result<i64, Box<dyn std::error::Error>> {
    Ok(block_on(store.write_transaction(|tx| {
        tx.connection()
            .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
    }))?)
}

/// Whether the listener has a signal waiting, without waiting for one.
fn signalled(l: &mut Listener) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    matches!(pin!(l.changed()).poll(&mut cx), Poll::Ready(_))
}

fn all_events(store: &SqliteStore) -> Result<Vec<eskit_core::event::RawEvent>, StoreError> {
    let mut out = Vec::new();
    let mut after = GlobalCursor::START;
    loop {
        let page = block_on(store.read(ReadOptions::new(after, 1000)))?;
        if page.events.is_empty() {
            return Ok(out);
        }
        after = page.next;
        out.extend(page.events);
    }
}

fn place(tx: &mut WriteTx<'_>, id: &str, total: i64) -> Result<Position, BoxError> {
    let s = stream("order", id).map_err(|e| e.to_string())?;
    let e = event("Placed", &format!("{{\"total\":{total}}}")).map_err(|e| e.to_string())?;
    let r = tx.append(&s, ExpectedVersion::NoStream, vec![e], AppendOptions::new())?;
    tx.connection().execute(
        "INSERT INTO orders (id, total) VALUES (?1, ?2)",
        (id, total),
    )?;
    Ok(r.last_position())
}

#[test]
fn a_failing_closure_stores_nothing() -> TestResult {
    let dir = TempDir::new("tx-fail")?;
    let store = open(&dir)?;
    let mut listener = eskit_core::store::CommitFeed::listen(&store)?;
    let before = store.notifier().latest();
    let r = block_on(store.write_transaction(|tx| {
        place(tx, "o-1", 10)?;
        tx.save_checkpoint("orders", GlobalCursor::new(0, Position::new(1)))?;
        Err::<(), BoxError>("the caller changed its mind".into())
    }));
    assert!(matches!(r, Err(TxError::Aborted(_))), "{r:?}");
    assert_eq!(orders(&store)?, 0);
    assert_eq!(
        block_on(store.stream_version(&stream("order", "o-1")?))?,
        Version::ZERO
    );
    assert!(all_events(&store)?.is_empty());
    assert_eq!(block_on(store.checkpoints().load("orders"))?, None);
    // A rollback signals nothing.
    assert_eq!(store.notifier().latest(), before);
    assert!(!signalled(&mut listener));
    block_on(store.close());
    Ok(())
}

#[test]
fn a_successful_closure_stores_both_and_the_feed_fires_once_at_commit() -> TestResult {
    let dir = TempDir::new("tx-ok")?;
    let store = open(&dir)?;
    let mut listener = eskit_core::store::CommitFeed::listen(&store)?;
    let notifier = store.notifier().clone();
    let before = notifier.latest();
    let (position, seen_inside) = block_on(store.write_transaction(move |tx| {
        let p = place(tx, "o-1", 10)?;
        tx.save_checkpoint("orders", GlobalCursor::new(0, p))?;
        // Still inside the transaction: nobody has been told yet.
        Ok::<_, BoxError>((p, notifier.latest()))
    }))?;
    assert_eq!(seen_inside, before);
    assert_eq!(store.notifier().latest(), position);
    assert!(signalled(&mut listener));
    assert!(!signalled(&mut listener), "one commit, one signal");
    assert_eq!(orders(&store)?, 1);
    let events = all_events(&store)?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].position, position);
    assert_eq!(
        block_on(store.checkpoints().load("orders"))?,
        Some(GlobalCursor::new(0, position))
    );
    // Durable: a reopened store has both.
    block_on(store.close());
    let store = SqliteStore::open(dir.file("events.db"))?;
    assert_eq!(orders(&store)?, 1);
    assert_eq!(all_events(&store)?.len(), 1);
    block_on(store.close());
    Ok(())
}

#[test]
fn the_transaction_sees_its_own_appends() -> TestResult {
    let dir = TempDir::new("tx-own")?;
    let store = open(&dir)?;
    let s = stream("order", "o-1")?;
    let key = AppendOptions::new().with_idempotency_key("k-1");
    let (first, second, retry, rows) = block_on(store.write_transaction(move |tx| {
        let first = tx.append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("Placed", "{}").map_err(|e| e.to_string())?],
            key.clone(),
        )?;
        // The expected version counts the append above.
        let second = tx.append(
            &s,
            ExpectedVersion::Exact(Version::new(1)),
            vec![event("Paid", "{}").map_err(|e| e.to_string())?],
            AppendOptions::new(),
        )?;
        // A retry with the same key finds the first append.
        let retry = tx.append(
            &s,
            ExpectedVersion::Any,
            vec![event("Placed", "{}").map_err(|e| e.to_string())?],
            key,
        );
        let rows: i64 =
            tx.connection()
                .query_row("SELECT count(*) FROM eskit_events", [], |r| r.get(0))?;
        Ok::<_, BoxError>((first, second, retry, rows))
    }))?;
    assert_eq!(rows, 2);
    assert_eq!(second.last_version(), Version::new(2));
    assert_eq!(
        second.last_position().get(),
        first.last_position().get() + 1
    );
    // Same key and content: found in the uncommitted first append.
    let retry = retry?;
    assert!(retry.deduplicated);
    assert_eq!(retry.records, first.records);
    assert_eq!(all_events(&store)?.len(), 2);
    block_on(store.close());
    Ok(())
}

#[test]
fn a_refused_append_leaves_the_transaction_usable() -> TestResult {
    let dir = TempDir::new("tx-refused")?;
    let store = open(&dir)?;
    let id = EventId::new();
    let a = stream("order", "o-1")?;
    let b = stream("order", "o-2")?;
    let dup = event("Placed", "{}")?.with_id(id);
    block_on(store.append(
        &a,
        ExpectedVersion::NoStream,
        vec![dup.clone()],
        AppendOptions::new(),
    ))?;
    let (refused, ok) = block_on(store.write_transaction(move |tx| {
        let conflict = tx.append(
            &a,
            ExpectedVersion::NoStream,
            vec![event("Placed", "{}").map_err(|e| e.to_string())?],
            AppendOptions::new(),
        );
        assert!(matches!(
            conflict,
            Err(StoreError::WrongExpectedVersion { .. })
        ));
        // Fails while writing (the unique index of event ids): undone to
        // before the call, the position counter included.
        let fresh_kind = event("Shipped", "{}").map_err(|e| e.to_string())?;
        let refused = tx.append(
            &b,
            ExpectedVersion::NoStream,
            vec![fresh_kind, dup],
            AppendOptions::new(),
        );
        let ok = tx.append(
            &b,
            ExpectedVersion::NoStream,
            vec![event("Shipped", "{}").map_err(|e| e.to_string())?],
            AppendOptions::new(),
        )?;
        Ok::<_, BoxError>((refused, ok))
    }))?;
    assert!(
        matches!(refused, Err(StoreError::DuplicateEventId { id: d }) if d == id),
        "{refused:?}"
    );
    assert_eq!(ok.last_position(), Position::new(2));
    assert_eq!(ok.last_version(), Version::new(1));
    let events = all_events(&store)?;
    assert_eq!(
        events.iter().map(|e| e.position.get()).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(events[1].event_type.as_str(), "Shipped");
    block_on(store.close());
    Ok(())
}

/// Transactions (some rolled back after appending) interleaved with
/// concurrent plain appends, which the writer commits in groups: every
/// acknowledged position is unique, present with the right event, and no
/// rolled-back event is stored.
#[test]
fn positions_are_never_reused_across_transactions_and_group_commits() -> TestResult {
    const WRITERS: usize = 4;
    const ROUNDS: usize = 60;
    let dir = TempDir::new("tx-interleave")?;
    let store = open(&dir)?;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(Position, EventId)>::new()));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (store, acked) = (store.clone(), Arc::clone(&acked));
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            for i in 0..ROUNDS {
                let s = stream("plain", &format!("w{w}-{i}")).map_err(|e| e.to_string())?;
                let e = event("Plain", "{}").map_err(|e| e.to_string())?;
                let id = e.id();
                let r = block_on(store.append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![e],
                    AppendOptions::new(),
                ))
                .map_err(|e| e.to_string())?;
                acked
                    .lock()
                    .map_err(|e| e.to_string())?
                    .push((r.last_position(), id));
            }
            Ok(())
        }));
    }
    let mut rolled_back = HashSet::new();
    for i in 0..ROUNDS {
        let e1 = event("InTx", "{}")?;
        let e2 = event("InTx", "{}")?;
        let ids = [e1.id(), e2.id()];
        let s = stream("tx", &format!("t-{i}"))?;
        let commit = i % 3 != 0;
        let r = block_on(store.write_transaction(move |tx| {
            let r = tx.append(
                &s,
                ExpectedVersion::NoStream,
                vec![e1, e2],
                AppendOptions::new(),
            )?;
            tx.connection().execute(
                "INSERT INTO orders (id, total) VALUES (?1, 1)",
                [s.to_string()],
            )?;
            if commit {
                Ok(r)
            } else {
                Err::<_, BoxError>("rolled back on purpose".into())
            }
        }));
        match r {
            Ok(r) => {
                let mut a = acked.lock().map_err(|e| e.to_string())?;
                for (rec, id) in r.records.iter().zip(ids) {
                    assert_eq!(rec.id, id);
                    a.push((rec.position, id));
                }
            }
            Err(TxError::Aborted(_)) => {
                rolled_back.extend(ids);
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
    for t in threads {
        t.join().map_err(|_| "writer panicked")??;
    }
    let acked = acked.lock().map_err(|e| e.to_string())?.clone();
    let events = all_events(&store)?;
    let positions: Vec<u64> = events.iter().map(|e| e.position.get()).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions strictly increase"
    );
    let unique: BTreeSet<u64> = acked.iter().map(|(p, _)| p.get()).collect();
    assert_eq!(
        unique.len(),
        acked.len(),
        "an acknowledged position was handed out twice"
    );
    assert_eq!(
        events.len(),
        acked.len(),
        "stored events = acknowledged events"
    );
    for (p, id) in &acked {
        let stored = events
            .iter()
            .find(|e| e.position == *p)
            .ok_or_else(|| format!("acknowledged position {p} missing"))?;
        assert_eq!(stored.id, *id, "position {p} holds another event");
    }
    assert!(events.iter().all(|e| !rolled_back.contains(&e.id)));
    assert_eq!(orders(&store)?, (ROUNDS - ROUNDS.div_ceil(3)) as i64);
    block_on(store.close());
    Ok(())
}

#[test]
fn a_panicking_closure_rolls_back_and_the_store_keeps_working() -> TestResult {
    let dir = TempDir::new("tx-panic")?;
    let store = open(&dir)?;
    let r = block_on(store.write_transaction(|tx| {
        let _ = place(tx, "o-1", 1);
        if tx.connection().is_autocommit() {
            return Ok::<(), BoxError>(());
        }
        panic!("a bug in the closure");
    }));
    assert!(
        matches!(r, Err(TxError::Store(StoreError::Internal { .. }))),
        "{r:?}"
    );
    assert_eq!(orders(&store)?, 0);
    let p = block_on(store.write_transaction(|tx| place(tx, "o-2", 2)))?;
    assert_eq!(
        p,
        Position::new(1),
        "the rolled-back position is free again"
    );
    assert_eq!(all_events(&store)?.len(), 1);
    block_on(store.close());
    Ok(())
}

/// The read-model sink: a page applied twice, or overlapping one already
/// applied, has its effect once and never moves the cursor back.
#[test]
fn the_sink_applies_each_event_once_whatever_pages_it_is_given() -> TestResult {
    use eskit_core::store::ProjectionSink;
    let dir = TempDir::new("tx-sink")?;
    let store = open(&dir)?;
    for i in 0..6 {
        let s = stream("order", &format!("o-{i}"))?;
        block_on(store.append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("Placed", "{}")?],
            AppendOptions::new(),
        ))?;
    }
    let events = all_events(&store)?;
    let sink = store.projection_sink(
        |tx: &mut WriteTx<'_>, events: &[eskit_core::event::RawEvent]| -> Result<(), BoxError> {
            for e in events {
                tx.connection().execute(
                    "INSERT INTO orders (id, total) VALUES (?1, 1)",
                    [e.stream.to_string()],
                )?;
            }
            Ok(())
        },
    );
    let at = |i: usize| events[i].cursor();
    block_on(sink.apply("orders", &events[..3], at(2)))?;
    // The same page again: a retry, or a run dropped while it was queued.
    block_on(sink.apply("orders", &events[..3], at(2)))?;
    // A page overlapping the one applied.
    block_on(sink.apply("orders", &events[1..5], at(4)))?;
    // An old page after a newer one: the cursor stays.
    block_on(sink.apply("orders", &events[..2], at(1)))?;
    assert_eq!(orders(&store)?, 5);
    assert_eq!(block_on(sink.cursor("orders"))?, Some(at(4)));
    block_on(sink.apply("orders", &events[5..], at(5)))?;
    assert_eq!(orders(&store)?, 6);
    assert_eq!(block_on(sink.cursor("orders"))?, Some(at(5)));
    // A projection error stores nothing, cursor included.
    let failing = store.projection_sink(
        |_: &mut WriteTx<'_>, _: &[eskit_core::event::RawEvent]| -> Result<(), BoxError> {
            Err("refused".into())
        },
    );
    let r = block_on(failing.apply("other", &events, at(5)));
    assert!(
        matches!(r, Err(eskit_core::store::SinkError::Projection(_))),
        "{r:?}"
    );
    assert_eq!(block_on(failing.cursor("other"))?, None);
    block_on(store.close());
    Ok(())
}

#[test]
fn transaction_futures_are_send() -> TestResult {
    fn assert_send<T: Send>(_: &T) {}
    let store = SqliteStore::open_in_memory()?;
    let f = store.write_transaction(|_tx| Ok::<(), BoxError>(()));
    assert_send(&f);
    block_on(f)?;
    let sink = store.projection_sink(
        |_: &mut WriteTx<'_>, _: &[eskit_core::event::RawEvent]| -> Result<(), BoxError> { Ok(()) },
    );
    let apply = eskit_core::store::ProjectionSink::apply(&sink, "s", &[], GlobalCursor::START);
    assert_send(&apply);
    block_on(apply)?;
    block_on(store.close());
    Ok(())
}

/// A command decided inside the caller's transaction: load the stream as
/// the transaction sees it, decide, append with the exact version, and
/// write the caller's own table, all committed together.
#[test]
fn a_decision_inside_the_transaction_sees_its_own_state() -> TestResult {
    let dir = TempDir::new("tx-decide")?;
    let store = open(&dir)?;
    let s = stream("order", "o-1")?;
    let decide =
        |tx: &mut WriteTx<'_>, s: &eskit_core::event::StreamName| -> Result<bool, BoxError> {
            let history = tx.load_stream(s)?;
            let version = tx.stream_version(s)?;
            assert_eq!(history.len() as u64, version.get());
            if history.iter().any(|e| e.event_type.as_str() == "Placed") {
                return Ok(false);
            }
            tx.append(
                s,
                ExpectedVersion::Exact(version),
                vec![event("Placed", "{}").map_err(|e| e.to_string())?],
                AppendOptions::new(),
            )?;
            tx.connection().execute(
                "INSERT INTO orders (id, total) VALUES (?1, 1)",
                [s.to_string()],
            )?;
            Ok(true)
        };
    let placed = block_on(store.write_transaction(move |tx| {
        // The second decision sees the first one's uncommitted event.
        Ok::<_, BoxError>((decide(tx, &s)?, decide(tx, &s)?))
    }))?;
    assert_eq!(placed, (true, false));
    assert_eq!(orders(&store)?, 1);
    assert_eq!(all_events(&store)?.len(), 1);
    block_on(store.close());
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Counter {
    Added(u32),
}

impl eskit_core::typed::DomainEvent for Counter {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn event_types() -> &'static [&'static str] {
        &["Added"]
    }
}

struct Text;

impl eskit_core::typed::EventCodec<Counter> for Text {
    fn name(&self) -> &'static str {
        "text"
    }
    fn encode(
        &self,
        event: &Counter,
        out: &mut Vec<u8>,
    ) -> Result<(), eskit_core::error::CodecError> {
        let Counter::Added(n) = event;
        out.extend_from_slice(n.to_string().as_bytes());
        Ok(())
    }
    fn decode(
        &self,
        event_type: &str,
        payload: &[u8],
    ) -> Result<Counter, eskit_core::error::CodecError> {
        std::str::from_utf8(payload)
            .map_err(|e| eskit_core::error::CodecError::decode(Some(event_type), e))?
            .parse()
            .map(Counter::Added)
            .map_err(|e| eskit_core::error::CodecError::decode(Some(event_type), e))
    }
}

/// Typed events in the caller's transaction: what the transaction appended
/// is loaded back decoded, before the commit.
#[test]
fn typed_events_append_and_load_inside_the_transaction() -> TestResult {
    let dir = TempDir::new("tx-typed")?;
    let store = open(&dir)?;
    let s = stream("counter", "c-1")?;
    let (loaded, result) = block_on(store.write_transaction(move |tx| {
        let schema = eskit_core::typed::EventSchema::new(Text);
        let r = tx.append_typed(
            &schema,
            &s,
            ExpectedVersion::NoStream,
            &[Counter::Added(2), Counter::Added(3)],
            AppendOptions::new(),
        )?;
        let loaded: Vec<Counter> = tx
            .load_typed(&schema, &s)?
            .into_iter()
            .map(|e| e.data)
            .collect();
        Ok::<_, StoreError>((loaded, r))
    }))?;
    assert_eq!(loaded, [Counter::Added(2), Counter::Added(3)]);
    assert_eq!(result.last_version(), Version::new(2));
    let events = all_events(&store)?;
    assert_eq!(events[1].payload, b"3");
    assert_eq!(events[1].codec.as_str(), "text");
    block_on(store.close());
    Ok(())
}
