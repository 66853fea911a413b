//! Model-based checking: seeded random sequences of appends, loads, global
//! reads and lifecycle operations run against the backend and against a
//! fresh [`MemoryStore`] as the model; every outcome must match.
//!
//! Seeds are fixed so failures reproduce (a failure names its seed);
//! `ESKIT_MODEL_SEED` picks the seed of `model.random_operations_chosen_seed`
//! and `ESKIT_MODEL_OPS` sets the operations per seed.

use eskit_core::{
    error::StoreError,
    event::{
        AppendResult, EventId, EventType, ExpectedVersion, GlobalCursor, NewEvent, Position,
        RawEvent, StreamName, StreamType, Timestamp, Version,
    },
    memory::MemoryStore,
    store::{
        AppendOptions, EventStore, GlobalBatch, GlobalPager, GlobalReader, LoadOptions,
        ReadOptions, StreamLifecycle, StreamStatus,
    },
};

use super::{Ctx, Failure, LIFECYCLE_GLOBAL, Outcome, Scenario, scenario_list};

pub(crate) fn scenarios() -> Vec<Scenario> {
    // One scenario per seed, so each starts from a fresh fixture.
    scenario_list![LIFECYCLE_GLOBAL;
        "model.random_operations_seed_1" => seed_1,
        "model.random_operations_seed_2" => seed_2,
        "model.random_operations_seed_3" => seed_3,
        "model.random_operations_chosen_seed" => chosen_seed,
    ]
}

/// Operations per seed unless `ESKIT_MODEL_OPS` says otherwise.
const DEFAULT_OPS: usize = 300;
/// The seed of `model.random_operations_chosen_seed` unless
/// `ESKIT_MODEL_SEED` names another (to explore, or to replay a failure).
const DEFAULT_CHOSEN_SEED: u64 = 0xe5_c1_7e;
const STREAMS: usize = 8;
const TYPES: [&str; 3] = ["A", "B", "C"];

fn ops() -> usize {
    std::env::var("ESKIT_MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_OPS)
}

async fn seed_1(c: Ctx) -> Outcome {
    run_seed(&c, 1, ops()).await
}

async fn seed_2(c: Ctx) -> Outcome {
    run_seed(&c, 0x5eed, ops()).await
}

async fn seed_3(c: Ctx) -> Outcome {
    run_seed(&c, 0xbad_5eed, ops()).await
}

async fn chosen_seed(c: Ctx) -> Outcome {
    let seed = std::env::var("ESKIT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(DEFAULT_CHOSEN_SEED);
    run_seed(&c, seed, ops()).await
}

/// splitmix64: small, seedable, good enough to pick operations.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An error reduced to what every backend must agree on.
fn sig(e: &StoreError) -> String {
    match e {
        StoreError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => format!("conflict {stream} expected {expected} actual {actual}"),
        StoreError::StreamDeleted { stream } => format!("deleted {stream}"),
        StoreError::StreamArchived { stream } => format!("archived {stream}"),
        StoreError::StreamNotFound { stream } => format!("not found {stream}"),
        StoreError::InvalidLifecycle {
            stream,
            state,
            operation,
        } => format!("cannot {operation} {stream} ({state})"),
        StoreError::IdempotencyConflict { stream, key } => {
            format!("idempotency conflict {stream} {key}")
        }
        StoreError::Validation(v) => format!("validation {v:?}"),
        other => format!(
            "unexpected error: {}",
            eskit_core::error::error_chain(other)
        ),
    }
}

/// Whether two outcomes agree: equal values, or errors with one meaning.
fn same<T: PartialEq>(a: &Result<T, StoreError>, b: &Result<T, StoreError>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(x), Err(y)) => sig(x) == sig(y),
        _ => false,
    }
}

/// The transaction keys the backend gave its events, by backend position.
/// The model (the memory store) orders by position alone and records key 0;
/// a backend ordered by transaction first records its own keys. The model
/// run is sequential, so the backend's keys grow with its positions, and a
/// model cursor "after position p" is the backend cursor (key of the newest
/// event at or before p, p): it splits the log at the same place.
#[derive(Default)]
struct TxKeys(std::collections::BTreeMap<u64, u64>);

impl TxKeys {
    fn record(&mut self, r: &Result<AppendResult, StoreError>) {
        if let Ok(a) = r {
            for rec in &a.records {
                self.0.insert(rec.position.get(), rec.tx);
            }
        }
    }

    /// The backend cursor that splits the log where model `at(p)` does.
    fn cursor(&self, p: u64) -> GlobalCursor {
        let tx = self.0.range(..=p).next_back().map_or(0, |(_, tx)| *tx);
        GlobalCursor::new(tx, Position::new(p))
    }
}

/// Transaction keys cleared, to compare with the model's.
fn no_tx_result(r: Result<AppendResult, StoreError>) -> Result<AppendResult, StoreError> {
    r.map(|mut a| {
        for rec in &mut a.records {
            rec.tx = 0;
        }
        a
    })
}

fn no_tx_events(r: Result<Vec<RawEvent>, StoreError>) -> Result<Vec<RawEvent>, StoreError> {
    r.map(|mut v| {
        for e in &mut v {
            e.tx = 0;
        }
        v
    })
}

fn no_tx_page(r: Result<GlobalBatch, StoreError>) -> Result<GlobalBatch, StoreError> {
    r.map(|mut p| {
        for e in &mut p.events {
            e.tx = 0;
        }
        p.next = GlobalCursor::at(p.next.position());
        p.head = GlobalCursor::at(p.head.position());
        p
    })
}

/// Every event after `after`, page by page.
async fn read_from<R: GlobalReader>(
    global: &R,
    after: GlobalCursor,
) -> Result<Vec<RawEvent>, StoreError> {
    GlobalPager::new(global, ReadOptions::new(after, 1000))
        .collect()
        .await
}

fn outcome<T: std::fmt::Debug>(r: &Result<T, StoreError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {}", sig(e)),
    }
}

/// The part of a status every backend must agree on (not `changed_at`).
fn status_sig(s: &StreamStatus) -> String {
    format!("{} v{} {:?}", s.state, s.version, s.reason)
}

/// Shifts model positions by the backend's starting position, so a fixture
/// that is not quite empty still compares.
fn shift_result(
    r: Result<AppendResult, StoreError>,
    offset: u64,
) -> Result<AppendResult, StoreError> {
    r.map(|mut a| {
        for rec in &mut a.records {
            rec.position = Position::new(rec.position.get() + offset);
        }
        a
    })
}

/// A model page with positions (events, next, head) moved by `offset`.
fn shift_page(r: Result<GlobalBatch, StoreError>, offset: u64) -> Result<GlobalBatch, StoreError> {
    let shift = |c: GlobalCursor| GlobalCursor::at(Position::new(c.position().get() + offset));
    r.map(|mut p| {
        for e in &mut p.events {
            e.position = Position::new(e.position.get() + offset);
        }
        p.next = shift(p.next);
        p.head = shift(p.head);
        p
    })
}

fn shift_events(
    r: Result<Vec<RawEvent>, StoreError>,
    offset: u64,
) -> Result<Vec<RawEvent>, StoreError> {
    r.map(|mut v| {
        for e in &mut v {
            e.position = Position::new(e.position.get() + offset);
        }
        v
    })
}

async fn run_seed(c: &Ctx, seed: u64, ops: usize) -> Outcome {
    run_seed_inner(c, seed, ops).await.map_err(|Failure(why)| {
        Failure(format!(
            "seed {seed} (replay with ESKIT_MODEL_SEED={seed}): {why}"
        ))
    })
}

async fn run_seed_inner(c: &Ctx, seed: u64, ops: usize) -> Outcome {
    let events = c.events();
    let global = c.global()?;
    let lifecycle = c.lifecycle()?;
    let model = MemoryStore::new();
    let mut rng = Rng(seed);
    let offset = global
        .dyn_head()
        .await
        .map_err(|e| Failure(format!("head: {}", eskit_core::error::error_chain(&e))))?
        .position()
        .get();
    let streams: Vec<StreamName> = (0..STREAMS)
        .map(|i| {
            let ty = if i % 2 == 0 { "model-a" } else { "model-b" };
            StreamName::new(ty, format!("s{i}"))
        })
        .collect::<Result<_, _>>()?;
    let types: Vec<EventType> = TYPES
        .iter()
        .map(|t| EventType::new(*t))
        .collect::<Result<_, _>>()?;
    let t0 = Timestamp::from_unix_micros(1_700_000_000_000_000);
    let mut last_append: Option<(usize, Vec<NewEvent>, AppendOptions)> = None;
    let mut keys = TxKeys::default();

    for step in 0..ops {
        let s = rng.below(STREAMS as u64) as usize;
        let stream = &streams[s];
        let what = rng.below(100);
        let here = |op: &str| format!("step {step} ({op} on {stream})");
        if what < 50 {
            // Append, sometimes retrying the previous append as is.
            let (s, batch, options) = match &last_append {
                Some(prev) if rng.chance(10) => prev.clone(),
                _ => {
                    let n = 1 + rng.below(3) as usize;
                    let batch = (0..n)
                        .map(|_| {
                            let len = rng.below(12) as usize;
                            let payload = (0..len).map(|_| rng.next() as u8).collect();
                            NewEvent::new(types[rng.below(3) as usize].clone(), payload)
                                .with_id(EventId::from_u128(
                                    u128::from(rng.next()) << 64 | u128::from(rng.next()),
                                ))
                                .with_schema_version(1 + rng.below(2) as u32)
                        })
                        .collect();
                    let mut options = AppendOptions::new().with_timestamp(
                        Timestamp::from_unix_micros(t0.as_unix_micros() + step as i64),
                    );
                    if rng.chance(25) {
                        options = options.with_idempotency_key(format!("k{}", rng.below(6)));
                    }
                    (s, batch, options)
                }
            };
            let stream = &streams[s];
            let current = model
                .stream_version(stream)
                .await
                .map_err(|e| Failure(sig(&e)))?;
            let expected = match rng.below(10) {
                0..=2 => ExpectedVersion::Any,
                3 => ExpectedVersion::NoStream,
                4 => ExpectedVersion::StreamExists,
                _ => {
                    let v = current.get();
                    ExpectedVersion::Exact(Version::new(match rng.below(5) {
                        0 => v.saturating_sub(1),
                        1 => v + 1,
                        _ => v,
                    }))
                }
            };
            let want = shift_result(
                model
                    .append(stream, expected, batch.clone(), options.clone())
                    .await,
                offset,
            );
            let got = events
                .dyn_append(stream, expected, batch.clone(), options.clone())
                .await;
            keys.record(&got);
            let got = no_tx_result(got);
            if !same(&want, &got) {
                return Err(Failure(format!(
                    "{}: append {expected}: expected {} (the model), got {}",
                    here("append"),
                    outcome(&want),
                    outcome(&got)
                )));
            }
            last_append = Some((s, batch, options));
        } else if what < 65 {
            let v = model
                .stream_version(stream)
                .await
                .map_err(|e| Failure(sig(&e)))?
                .get();
            let mut o = LoadOptions::new();
            if rng.chance(40) {
                o = o.with_from(Version::new(rng.below(v + 3)));
            }
            if rng.chance(30) {
                let from = o.from().map_or(0, Version::get);
                o = o.with_to(Version::new(from + rng.below(4)));
            }
            if rng.chance(30) {
                o = o.with_limit(1 + rng.below(4) as usize);
            }
            if rng.chance(25) {
                o = o.with_event_types([types[rng.below(3) as usize].clone()]);
            }
            let want = shift_events(model.load(stream, o.clone()).await, offset);
            let got = no_tx_events(events.dyn_load(stream, o.clone()).await);
            if !same(&want, &got) {
                return Err(Failure(format!(
                    "{}: load {o:?}: expected {} (the model), got {}",
                    here("load"),
                    super::short(&want),
                    super::short(&got)
                )));
            }
        } else if what < 77 {
            let latest = model
                .head()
                .await
                .map_err(|e| Failure(sig(&e)))?
                .position()
                .get();
            let from = rng.below(latest + 3);
            let mut o = ReadOptions::new(
                GlobalCursor::at(Position::new(from)),
                1 + rng.below(12) as usize,
            );
            if rng.chance(25) {
                o = o.with_event_types([types[rng.below(3) as usize].clone()]);
            }
            if rng.chance(25) {
                o = o.with_stream_type(StreamType::new(if rng.chance(50) {
                    "model-a"
                } else {
                    "model-b"
                })?);
            }
            // Model position p is backend position p + offset.
            let mut shifted = ReadOptions::new(keys.cursor(from + offset), o.limit())
                .with_event_types(o.event_types().iter().cloned());
            if let Some(t) = o.stream_type() {
                shifted = shifted.with_stream_type(t.clone());
            }
            let want = shift_page(model.read(o).await, offset);
            let got = no_tx_page(global.dyn_read(shifted).await);
            if !same(&want, &got) {
                return Err(Failure(format!(
                    "{}: read after {from}: expected {} (the model), got {}",
                    here("read"),
                    super::short(&want),
                    super::short(&got)
                )));
            }
        } else if what < 83 {
            let reason = format!("reason {step}");
            let (op, want, got) = match rng.below(4) {
                0 => (
                    "tombstone",
                    model.tombstone(stream, &reason).await,
                    lifecycle.dyn_tombstone(stream, &reason).await,
                ),
                1 => (
                    "archive",
                    model.archive(stream, &reason).await,
                    lifecycle.dyn_archive(stream, &reason).await,
                ),
                2 => (
                    "restore",
                    model.restore(stream).await,
                    lifecycle.dyn_restore(stream).await,
                ),
                _ => (
                    "delete",
                    model.delete(stream).await,
                    lifecycle.dyn_delete(stream).await,
                ),
            };
            if !same(&want, &got) {
                return Err(Failure(format!(
                    "{}: expected {} (the model), got {}",
                    here(op),
                    outcome(&want),
                    outcome(&got)
                )));
            }
        } else if what < 93 {
            let want = model.status(stream).await.map_err(|e| Failure(sig(&e)))?;
            let got = lifecycle
                .dyn_status(stream)
                .await
                .map_err(|e| Failure(sig(&e)))?;
            if status_sig(&want) != status_sig(&got) {
                return Err(Failure(format!(
                    "{}: expected {} (the model), got {}",
                    here("status"),
                    status_sig(&want),
                    status_sig(&got)
                )));
            }
        } else {
            let want = model
                .stream_version(stream)
                .await
                .map_err(|e| Failure(sig(&e)))?;
            let got = events
                .dyn_stream_version(stream)
                .await
                .map_err(|e| Failure(sig(&e)))?;
            let want_latest = model
                .head()
                .await
                .map_err(|e| Failure(sig(&e)))?
                .position()
                .get();
            let got_latest = global
                .dyn_head()
                .await
                .map_err(|e| Failure(sig(&e)))?
                .position()
                .get();
            // The newest stored event; with nothing of ours stored, nothing
            // newer than what the fixture held before.
            let latest_agrees = if want_latest == 0 {
                got_latest <= offset
            } else {
                got_latest == want_latest + offset
            };
            if want != got || !latest_agrees {
                return Err(Failure(format!(
                    "{}: expected version {want} and latest position {want_latest} (the model), got version {got} and latest {got_latest}",
                    here("stream_version")
                )));
            }
        }
    }
    // Finally everything stored must be the same.
    let want = shift_events(read_from(&model, GlobalCursor::START).await, offset)
        .map_err(|e| Failure(format!("final model read: {}", sig(&e))))?;
    let got = no_tx_events(read_from(global, keys.cursor(offset)).await)
        .map_err(|e| Failure(format!("final backend read: {}", sig(&e))))?;
    if want != got {
        return Err(Failure(format!(
            "final read: expected {} events (the model), got {} (first difference at index {:?})",
            want.len(),
            got.len(),
            want.iter().zip(&got).position(|(a, b)| a != b)
        )));
    }
    Ok(())
}
