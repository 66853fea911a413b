//! Operation histories and a checker for them, in the spirit of Jepsen's
//! Elle: every append is recorded as invoked, then as ok, failed or unknown,
//! and the history is compared with a final full read of the store.
//!
//! The checker finds **lost** events (acknowledged but absent),
//! **unexpected** events (present but never invoked), **duplicated** ids,
//! **version holes** (per-stream versions not contiguous from 1), **order
//! violations** (global positions not strictly increasing, or a stream's
//! versions not in global order), and acknowledged appends whose records
//! differ from the stored events or from the version the writer expected.
//!
//! ```
//! use eskit_core::prelude::*;
//! use eskit_core::{memory::MemoryStore, rt::block_on};
//! use eskit_testing::history::{HistoryRecorder, check};
//! let store = MemoryStore::new();
//! let stream = StreamName::new("account", "a-1")?;
//! let recorder = HistoryRecorder::new();
//! let events = vec![NewEvent::new(EventType::new("Opened")?, vec![])];
//! let op = recorder.invoke(1, &stream, ExpectedVersion::NoStream, &events);
//! let result = block_on(store.append(&stream, ExpectedVersion::NoStream, events, AppendOptions::new()));
//! recorder.complete(op, &result);
//! let all = block_on(store.read(ReadOptions::from_start(100)))?.events;
//! let report = check(&recorder.history(), &all);
//! assert!(report.is_valid(), "{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use eskit_core::{
    error::StoreError,
    event::{
        AppendResult, EventId, EventRecord, ExpectedVersion, NewEvent, RawEvent, StreamName,
        Version,
    },
};

/// Index of an operation in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub usize);

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Invoked and not completed yet (a crashed or still running client).
    Pending,
    /// Acknowledged with these records (for a deduplicated retry, the
    /// original append's records).
    Ok {
        /// What the store assigned.
        records: Vec<EventRecord>,
        /// Whether the store reported the append as a deduplicated retry.
        deduplicated: bool,
    },
    /// Definitely not applied.
    Fail {
        /// The error, as text.
        error: String,
        /// Whether it was an optimistic concurrency conflict.
        conflict: bool,
    },
    /// Unknown: it may or may not have been applied (a timeout, a lost
    /// connection).
    Info {
        /// Why the outcome is unknown.
        note: String,
    },
}

/// One append in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The writer that issued it.
    pub client: u64,
    /// The stream appended to.
    pub stream: StreamName,
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The ids of the events sent.
    pub event_ids: Vec<EventId>,
    /// How it ended.
    pub outcome: Outcome,
}

/// A complete history: the operations in invocation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Every operation, indexed by [`OpId`].
    pub ops: Vec<Operation>,
}

impl History {
    /// Operations acknowledged as ok.
    pub fn ok_count(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok { .. }))
            .count()
    }

    /// Operations that failed with a concurrency conflict.
    pub fn conflict_count(&self) -> usize {
        self.ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Fail { conflict: true, .. }))
            .count()
    }

    /// Events written by acknowledged, non-deduplicated appends.
    pub fn ok_event_count(&self) -> usize {
        self.ops
            .iter()
            .map(|o| match &o.outcome {
                Outcome::Ok {
                    records,
                    deduplicated: false,
                } => records.len(),
                _ => 0,
            })
            .sum()
    }
}

/// Records a history from many concurrent writers. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct HistoryRecorder {
    ops: Arc<Mutex<Vec<Operation>>>,
}

impl HistoryRecorder {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Vec<Operation>) -> R) -> R {
        f(&mut self.ops.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records that `client` is about to append `events` to `stream`.
    pub fn invoke(
        &self,
        client: u64,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> OpId {
        let op = Operation {
            client,
            stream: stream.clone(),
            expected,
            event_ids: events.iter().map(NewEvent::id).collect(),
            outcome: Outcome::Pending,
        };
        self.with(|ops| {
            ops.push(op);
            OpId(ops.len() - 1)
        })
    }

    /// Sets an operation's outcome.
    pub fn set(&self, op: OpId, outcome: Outcome) {
        self.with(|ops| {
            if let Some(o) = ops.get_mut(op.0) {
                o.outcome = outcome;
            }
        });
    }

    /// Sets the outcome from an append's result: ok, or a definite failure.
    /// Use [`HistoryRecorder::set`] with [`Outcome::Info`] for errors whose
    /// outcome is unknown.
    pub fn complete(&self, op: OpId, result: &Result<AppendResult, StoreError>) {
        let outcome = match result {
            Ok(r) => Outcome::Ok {
                records: r.records.clone(),
                deduplicated: r.deduplicated,
            },
            Err(e) => Outcome::Fail {
                error: eskit_core::error::error_chain(e),
                conflict: e.is_conflict(),
            },
        };
        self.set(op, outcome);
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        History {
            ops: self.with(|ops| ops.clone()),
        }
    }
}

/// A stream whose versions are not contiguous from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionHole {
    /// The stream.
    pub stream: StreamName,
    /// The version that should come next.
    pub expected: Version,
    /// The version found instead.
    pub found: Version,
}

/// Two events in the wrong order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderViolation {
    /// The earlier event.
    pub first: EventId,
    /// The later event.
    pub second: EventId,
    /// What is wrong.
    pub detail: String,
}

/// What [`check`] found. Empty lists mean the history is consistent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Events in the final read.
    pub read: usize,
    /// Events of acknowledged appends (counted once per original append).
    pub acknowledged: usize,
    /// Acknowledged but absent from the final read.
    pub lost: Vec<EventId>,
    /// Present in the final read but never invoked.
    pub unexpected: Vec<EventId>,
    /// Present but their append definitely failed.
    pub failed_but_present: Vec<EventId>,
    /// Present more than once.
    pub duplicated: Vec<EventId>,
    /// Per-stream version gaps.
    pub version_holes: Vec<VersionHole>,
    /// Global or stream order broken.
    pub order_violations: Vec<OrderViolation>,
    /// Acknowledged records that differ from the stored event, or an
    /// exact-version append acknowledged at another version.
    pub mismatched: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_valid(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.failed_but_present.is_empty()
            && self.duplicated.is_empty()
            && self.version_holes.is_empty()
            && self.order_violations.is_empty()
            && self.mismatched.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {}, acknowledged {}: {} lost, {} unexpected, {} failed but present, \
             {} duplicated, {} version holes, {} order violations, {} mismatched",
            self.read,
            self.acknowledged,
            self.lost.len(),
            self.unexpected.len(),
            self.failed_but_present.len(),
            self.duplicated.len(),
            self.version_holes.len(),
            self.order_violations.len(),
            self.mismatched.len()
        )?;
        if let Some(id) = self.lost.first() {
            write!(f, "; first lost {id}")?;
        }
        if let Some(id) = self.unexpected.first() {
            write!(f, "; first unexpected {id}")?;
        }
        if let Some(h) = self.version_holes.first() {
            write!(
                f,
                "; first hole in {}: expected version {}, found {}",
                h.stream, h.expected, h.found
            )?;
        }
        if let Some(v) = self.order_violations.first() {
            write!(f, "; first order violation: {}", v.detail)?;
        }
        if let Some(m) = self.mismatched.first() {
            write!(f, "; first mismatch: {m}")?;
        }
        Ok(())
    }
}

/// Checks a history against the final full read of the store (every event
/// in cursor order, as [`GlobalPager`](eskit_core::store::GlobalPager)
/// pages return them).
///
/// Streams must not have been deleted during the history, since deletion
/// legitimately removes acknowledged events.
pub fn check(history: &History, final_read: &[RawEvent]) -> CheckReport {
    let mut report = CheckReport {
        read: final_read.len(),
        ..CheckReport::default()
    };
    let mut stored: HashMap<EventId, &RawEvent> = HashMap::with_capacity(final_read.len());
    for e in final_read {
        if stored.insert(e.id, e).is_some() {
            report.duplicated.push(e.id);
        }
    }

    let mut invoked: HashSet<EventId> = HashSet::new();
    let mut failed: HashSet<EventId> = HashSet::new();
    let mut acknowledged: HashSet<EventId> = HashSet::new();
    for op in &history.ops {
        invoked.extend(op.event_ids.iter().copied());
        match &op.outcome {
            Outcome::Ok { records, .. } => {
                check_ok(op, records, &stored, &mut report);
                for r in records {
                    invoked.insert(r.id);
                    if acknowledged.insert(r.id) && !stored.contains_key(&r.id) {
                        report.lost.push(r.id);
                    }
                }
            }
            Outcome::Fail { .. } => failed.extend(op.event_ids.iter().copied()),
            Outcome::Pending | Outcome::Info { .. } => {}
        }
    }
    report.acknowledged = acknowledged.len();
    for e in final_read {
        if !invoked.contains(&e.id) {
            report.unexpected.push(e.id);
        } else if failed.contains(&e.id) && !acknowledged.contains(&e.id) {
            report.failed_but_present.push(e.id);
        }
    }

    // Global order: cursors (transaction key, then position) strictly
    // increasing in read order; with key 0 (memory, SQLite) that is
    // position order.
    for w in final_read.windows(2) {
        if let [a, b] = w
            && b.cursor() <= a.cursor()
        {
            report.order_violations.push(OrderViolation {
                first: a.id,
                second: b.id,
                detail: format!(
                    "cursor {} follows cursor {} in the global read",
                    b.cursor(),
                    a.cursor()
                ),
            });
        }
    }

    // Per stream: versions contiguous from 1 and increasing with position.
    let mut by_stream: BTreeMap<&StreamName, Vec<&RawEvent>> = BTreeMap::new();
    for e in final_read {
        by_stream.entry(&e.stream).or_default().push(e);
    }
    for (stream, events) in by_stream {
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| e.version);
        for (i, e) in sorted.iter().enumerate() {
            let want = Version::new(i as u64 + 1);
            if e.version != want {
                report.version_holes.push(VersionHole {
                    stream: stream.clone(),
                    expected: want,
                    found: e.version,
                });
                break;
            }
        }
        for w in events.windows(2) {
            if let [a, b] = w
                && b.version <= a.version
            {
                report.order_violations.push(OrderViolation {
                    first: a.id,
                    second: b.id,
                    detail: format!(
                        "in stream {stream}, version {} (position {}) comes after version {} (position {})",
                        b.version, b.position, a.version, a.position
                    ),
                });
            }
        }
    }
    report
}

fn check_ok(
    op: &Operation,
    records: &[EventRecord],
    stored: &HashMap<EventId, &RawEvent>,
    report: &mut CheckReport,
) {
    if let (ExpectedVersion::Exact(v), Some(first)) = (op.expected, records.first())
        && first.version != Version::new(v.get() + 1)
    {
        report.mismatched.push(format!(
            "append to {} expecting version {v} was acknowledged at version {}",
            op.stream, first.version
        ));
    }
    if op.expected == ExpectedVersion::NoStream
        && let Some(first) = records.first()
        && first.version != Version::new(1)
    {
        report.mismatched.push(format!(
            "append to {} expecting no stream was acknowledged at version {}",
            op.stream, first.version
        ));
    }
    for r in records {
        if let Some(e) = stored.get(&r.id)
            && (e.version != r.version
                || e.position != r.position
                || e.stream != op.stream
                || e.timestamp != r.timestamp)
        {
            report.mismatched.push(format!(
                "event {} acknowledged as {}@{} (position {}) but stored as {}@{} (position {})",
                r.id, op.stream, r.version, r.position, e.stream, e.version, e.position
            ));
        }
    }
}

/// The positions of `events` as raw numbers, for messages.
pub fn positions(events: &[RawEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.get()).collect()
}

/// The versions of `events` as raw numbers, for messages.
pub fn versions(events: &[RawEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

/// Whether `events` have versions `1..=n` in order.
pub fn contiguous_from_one(events: &[RawEvent]) -> bool {
    events
        .iter()
        .enumerate()
        .all(|(i, e)| e.version == Version::new(i as u64 + 1))
}

/// Whether cursors strictly increase (the read contract's order: by
/// transaction key, then position; position order where the key is 0), and
/// positions are unique.
pub fn strictly_increasing(events: &[RawEvent]) -> bool {
    let mut positions: Vec<_> = events.iter().map(|e| e.position).collect();
    positions.sort_unstable();
    positions.dedup();
    positions.len() == events.len()
        && events
            .windows(2)
            .all(|w| matches!(w, [a, b] if a.cursor() < b.cursor()))
}
