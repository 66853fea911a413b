//! Claim store contract: enqueue and keys, exclusive claims under
//! concurrent workers, lease expiry handing an item over, stale claims
//! refused, max attempts to dead, ordering by not-before time, and seeded
//! random operations agreeing with the memory claim store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eskit_core::limits::{MAX_CLAIM_BATCH, MAX_WORK_PAYLOAD_BYTES, MIN_CLAIM_LEASE};
use eskit_core::{
    error::{StoreError, ValidationError},
    event::{Metadata, Timestamp},
    store::{
        AfterFailure, Claim, ClaimOptions, DynClaimStore, Enqueued, InvalidWork, NewWorkItem,
        WorkState,
    },
};

use eskit_core::memory::MemoryClaimStore;

use super::model::Rng;

use super::{
    Capability, Ctx, Failure, Outcome, Scenario, ensure, ensure_eq, expect_err, scenario_list,
};

const CLAIMS: &[Capability] = &[Capability::Claims];

/// A lease long enough never to run out during a scenario.
const LONG: Duration = Duration::from_secs(300);

/// A lease meant to run out: the scenario sleeps [`PAST_SHORT`] after
/// claiming with it.
const SHORT: Duration = Duration::from_millis(50);
const PAST_SHORT: Duration = Duration::from_millis(200);

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![CLAIMS;
        "claim.enqueue_claim_complete" => round_trip,
        "claim.existing_key_left_alone" => existing_key,
        "claim.claimed_item_not_due" => claimed_not_due,
        "claim.ordered_by_not_before" => ordered_by_not_before,
        "claim.queues_independent" => queues_independent,
        "claim.exclusive_under_8_workers" => exclusive_workers,
        "claim.lease_expiry_hands_over" => lease_expiry,
        "claim.renew_keeps_claim" => renew_keeps,
        "claim.fail_backs_off" => fail_backs_off,
        "claim.fail_dead_and_requeue" => fail_dead,
        "claim.max_attempts_then_dead" => max_attempts,
        "claim.delete_frees_key" => delete_frees_key,
        "claim.invalid_inputs_rejected" => invalid_inputs,
        "claim.matches_the_memory_model" => model,
    ]
}

fn opts(owner: &str, limit: usize, lease: Duration) -> Result<ClaimOptions, Failure> {
    Ok(ClaimOptions::new(owner, limit, lease)?)
}

fn item(key: &str) -> NewWorkItem {
    NewWorkItem::new(key, key.as_bytes().to_vec())
}

fn at_offset(ms: i64) -> Timestamp {
    Timestamp::from_unix_micros(Timestamp::now().as_unix_micros() + ms * 1000)
}

async fn round_trip(c: Ctx) -> Outcome {
    let q = c.claims()?;
    let meta = Metadata::new().with_correlation_id("corr-1");
    let added = q
        .dyn_enqueue(
            "mail",
            vec![NewWorkItem::new("welcome:alice", b"alice".to_vec()).with_metadata(meta.clone())],
        )
        .await?;
    let [Enqueued::Added(id)] = added[..] else {
        return Err(Failure(format!("expected one added item, got {added:?}")));
    };
    let got = q.dyn_claim("mail", opts("w1", 10, LONG)?).await?;
    ensure_eq!(got.len(), 1, "items claimed");
    let it = &got[0];
    ensure_eq!(it.claim.id, id, "claimed id");
    ensure_eq!(
        (it.key.as_str(), it.payload.as_slice(), it.queue.as_str()),
        ("welcome:alice", &b"alice"[..], "mail"),
        "claimed key, payload and queue"
    );
    ensure_eq!(it.metadata, meta, "claimed metadata");
    ensure_eq!(it.attempt, 1, "first attempt");
    let stored = q
        .dyn_get(id)
        .await?
        .ok_or_else(|| Failure("item gone".into()))?;
    ensure!(
        matches!(&stored.state, WorkState::Claimed { owner, .. } if owner == "w1"),
        "state after claim: {:?}",
        stored.state
    );
    ensure!(q.dyn_complete(it.claim).await?, "complete of a held claim");
    let stored = q
        .dyn_get(id)
        .await?
        .ok_or_else(|| Failure("item gone".into()))?;
    ensure_eq!(stored.state, WorkState::Done, "state after complete");
    ensure!(
        !q.dyn_complete(it.claim).await?,
        "a second complete of the same claim succeeded"
    );
    ensure!(
        q.dyn_claim("mail", opts("w2", 10, LONG)?).await?.is_empty(),
        "a done item was claimed again"
    );
    ensure!(
        q.dyn_get(id + 1000).await?.is_none(),
        "get of an unknown id"
    );
    Ok(())
}

async fn existing_key(c: Ctx) -> Outcome {
    let q = c.claims()?;
    let first = q.dyn_enqueue("q", vec![item("a"), item("b")]).await?;
    let again = q
        .dyn_enqueue(
            "q",
            vec![
                item("b"),
                NewWorkItem::new("a", b"other".to_vec()),
                item("c"),
            ],
        )
        .await?;
    ensure_eq!(
        again[..2].to_vec(),
        vec![
            Enqueued::Existing(first[1].id()),
            Enqueued::Existing(first[0].id())
        ],
        "re-enqueued keys"
    );
    ensure!(
        matches!(again[2], Enqueued::Added(_)),
        "a new key: {:?}",
        again[2]
    );
    let got = q.dyn_claim("q", opts("w", 10, LONG)?).await?;
    ensure_eq!(got.len(), 3, "items claimed (each key once)");
    let a = got
        .iter()
        .find(|i| i.key == "a")
        .ok_or_else(|| Failure("no a".into()))?;
    ensure_eq!(a.payload, b"a".to_vec(), "the first payload of a key stays");
    // Done items keep their key: a redelivered event enqueues nothing.
    ensure!(q.dyn_complete(a.claim).await?, "complete");
    let after = q.dyn_enqueue("q", vec![item("a")]).await?;
    ensure_eq!(
        after,
        vec![Enqueued::Existing(a.claim.id)],
        "a done key re-enqueued"
    );
    Ok(())
}

async fn claimed_not_due(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("q", vec![item("a"), item("b"), item("c")])
        .await?;
    let first = q.dyn_claim("q", opts("w1", 2, LONG)?).await?;
    ensure_eq!(first.len(), 2, "items claimed with limit 2");
    let second = q.dyn_claim("q", opts("w2", 10, LONG)?).await?;
    ensure_eq!(second.len(), 1, "items left for the second worker");
    ensure!(
        first.iter().all(|f| f.claim.id != second[0].claim.id),
        "an item was claimed twice"
    );
    ensure!(
        q.dyn_claim("q", opts("w3", 10, LONG)?).await?.is_empty(),
        "held items were claimed again"
    );
    Ok(())
}

async fn ordered_by_not_before(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue(
        "q",
        vec![
            item("later").with_not_before(at_offset(-1_000)),
            item("future").with_not_before(at_offset(3_600_000)),
            item("earliest").with_not_before(at_offset(-3_000)),
            item("middle").with_not_before(at_offset(-2_000)),
        ],
    )
    .await?;
    q.dyn_enqueue("q", vec![item("now")]).await?;
    let got = q.dyn_claim("q", opts("w", 10, LONG)?).await?;
    let keys: Vec<&str> = got.iter().map(|i| i.key.as_str()).collect();
    ensure_eq!(
        keys,
        vec!["earliest", "middle", "later", "now"],
        "claim order (the future item is not due)"
    );
    let one = q.dyn_enqueue("p", vec![item("x"), item("y")]).await?;
    let first = q.dyn_claim("p", opts("w", 1, LONG)?).await?;
    ensure_eq!(
        first.first().map(|i| i.claim.id),
        Some(one[0].id()),
        "equal not-before times go by id"
    );
    Ok(())
}

async fn queues_independent(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("a", vec![item("k")]).await?;
    let b = q.dyn_enqueue("b", vec![item("k")]).await?;
    ensure!(
        matches!(b[0], Enqueued::Added(_)),
        "the same key in another queue: {b:?}"
    );
    let got = q.dyn_claim("b", opts("w", 10, LONG)?).await?;
    ensure_eq!(got.len(), 1, "items of queue b");
    ensure_eq!(got[0].queue, "b", "queue of the claimed item");
    ensure_eq!(
        q.dyn_claim("a", opts("w", 10, LONG)?).await?.len(),
        1,
        "items of queue a"
    );
    Ok(())
}

async fn exclusive_workers(c: Ctx) -> Outcome {
    let q = Arc::clone(c.claims()?);
    let items = 400;
    for chunk in (0..items).collect::<Vec<_>>().chunks(100) {
        let batch = chunk.iter().map(|i| item(&format!("job-{i}"))).collect();
        q.dyn_enqueue("jobs", batch).await?;
    }
    let done: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let workers = 8;
    let gate = c.gate(workers);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (q, done, gate) = (Arc::clone(&q), Arc::clone(&done), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                let options = ClaimOptions::new(format!("worker-{w}"), 7, LONG)?;
                loop {
                    let got = q.dyn_claim("jobs", options.clone()).await?;
                    if got.is_empty() {
                        return Ok::<_, Failure>(());
                    }
                    for it in got {
                        if !q.dyn_complete(it.claim).await? {
                            return Err(Failure(format!("complete of {} refused", it.key)));
                        }
                        let mut d = done.lock().map_err(|_| Failure("poisoned".into()))?;
                        *d.entry(it.key).or_default() += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let d = done.lock().map_err(|_| Failure("poisoned".into()))?;
    let twice: Vec<_> = d.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "items done more than once: {twice:?}");
    ensure_eq!(d.len(), items, "items done");
    Ok(())
}

async fn lease_expiry(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("q", vec![item("a")]).await?;
    let first = q.dyn_claim("q", opts("w1", 1, SHORT)?).await?;
    ensure_eq!(first.len(), 1, "first claim");
    eskit_core::rt::sleep(PAST_SHORT).await;
    let second = q.dyn_claim("q", opts("w2", 1, LONG)?).await?;
    ensure_eq!(second.len(), 1, "claim after the first lease ran out");
    let (old, new) = (first[0].claim, second[0].claim);
    ensure_eq!(new.id, old.id, "the same item");
    ensure!(
        new.token > old.token,
        "token did not grow: {old:?} then {new:?}"
    );
    ensure_eq!(second[0].attempt, 2, "attempt of the second claim");
    ensure!(
        !q.dyn_complete(old).await?,
        "the stale claim completed the item"
    );
    ensure!(!q.dyn_renew(old, LONG).await?, "the stale claim renewed");
    ensure!(
        !q.dyn_fail(old, "late", AfterFailure::Dead).await?,
        "the stale claim failed the item"
    );
    ensure!(q.dyn_complete(new).await?, "the new claim's complete");
    let stored = q
        .dyn_get(new.id)
        .await?
        .ok_or_else(|| Failure("item gone".into()))?;
    ensure_eq!(stored.state, WorkState::Done, "state");
    ensure_eq!(stored.attempts, 2, "attempts");
    Ok(())
}

async fn renew_keeps(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("q", vec![item("a")]).await?;
    let got = q.dyn_claim("q", opts("w1", 1, SHORT)?).await?;
    ensure_eq!(got.len(), 1, "claim");
    ensure!(
        q.dyn_renew(got[0].claim, LONG).await?,
        "renew of a held claim"
    );
    eskit_core::rt::sleep(PAST_SHORT).await;
    ensure!(
        q.dyn_claim("q", opts("w2", 1, LONG)?).await?.is_empty(),
        "a renewed claim was handed over"
    );
    ensure!(q.dyn_complete(got[0].claim).await?, "complete after renew");
    Ok(())
}

async fn fail_backs_off(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("q", vec![item("a"), item("b")]).await?;
    let got = q.dyn_claim("q", opts("w", 2, LONG)?).await?;
    ensure_eq!(got.len(), 2, "claim");
    let later = at_offset(3_600_000);
    ensure!(
        q.dyn_fail(got[0].claim, "smtp down", AfterFailure::RetryAt(later))
            .await?,
        "fail with a retry in an hour"
    );
    ensure!(
        q.dyn_fail(
            got[1].claim,
            "smtp down again",
            AfterFailure::RetryAt(at_offset(-1))
        )
        .await?,
        "fail with a retry now"
    );
    let stored = q
        .dyn_get(got[0].claim.id)
        .await?
        .ok_or_else(|| Failure("gone".into()))?;
    ensure_eq!(
        stored.state,
        WorkState::Pending { not_before: later },
        "state after fail"
    );
    ensure_eq!(
        stored.last_error.as_deref(),
        Some("smtp down"),
        "kept error"
    );
    let again = q.dyn_claim("q", opts("w", 10, LONG)?).await?;
    ensure_eq!(again.len(), 1, "only the item due now is claimed");
    ensure_eq!(again[0].claim.id, got[1].claim.id, "the item due now");
    ensure_eq!(again[0].attempt, 2, "its attempt");
    ensure_eq!(
        again[0].last_error.as_deref(),
        Some("smtp down again"),
        "the error of the attempt before"
    );
    Ok(())
}

async fn fail_dead(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("q", vec![item("a"), item("b")]).await?;
    let got = q.dyn_claim("q", opts("w", 2, LONG)?).await?;
    ensure!(
        q.dyn_fail(got[0].claim, "bad address", AfterFailure::Dead)
            .await?,
        "fail to dead"
    );
    ensure!(q.dyn_complete(got[1].claim).await?, "complete the other");
    let dead = q.dyn_dead("q", 0, 10).await?;
    ensure_eq!(dead.len(), 1, "dead items");
    ensure_eq!(
        (
            dead[0].id,
            dead[0].state.clone(),
            dead[0].attempts,
            dead[0].last_error.as_deref()
        ),
        (got[0].claim.id, WorkState::Dead, 1, Some("bad address")),
        "the dead item"
    );
    ensure!(
        q.dyn_dead("q", dead[0].id, 10).await?.is_empty(),
        "dead items after the last id"
    );
    ensure!(
        q.dyn_dead("other", 0, 10).await?.is_empty(),
        "dead items of another queue"
    );
    ensure!(
        q.dyn_claim("q", opts("w", 10, LONG)?).await?.is_empty(),
        "a dead item was claimed"
    );
    ensure!(q.dyn_requeue(dead[0].id).await?, "requeue a dead item");
    ensure!(
        !q.dyn_requeue(got[1].claim.id).await?,
        "requeue of a done item"
    );
    let again = q.dyn_claim("q", opts("w", 10, LONG)?).await?;
    ensure_eq!(again.len(), 1, "claimed after requeue");
    ensure_eq!(again[0].attempt, 1, "attempts start over after requeue");
    ensure!(
        again[0].claim.token > got[0].claim.token,
        "token grows across a requeue"
    );
    Ok(())
}

async fn max_attempts(c: Ctx) -> Outcome {
    let q = c.claims()?;
    q.dyn_enqueue("q", vec![item("crashes-worker")]).await?;
    let options = opts("w", 1, SHORT)?.with_max_attempts(2)?;
    for attempt in 1..=2 {
        let got = q.dyn_claim("q", options.clone()).await?;
        ensure_eq!(got.len(), 1, "claim {attempt}");
        ensure_eq!(got[0].attempt, attempt, "attempt");
        // The worker "crashes": nothing completes, the lease runs out.
        eskit_core::rt::sleep(PAST_SHORT).await;
    }
    ensure!(
        q.dyn_claim("q", options).await?.is_empty(),
        "an item past its attempts was claimed again"
    );
    let dead = q.dyn_dead("q", 0, 10).await?;
    ensure_eq!(dead.len(), 1, "dead items");
    ensure_eq!(dead[0].attempts, 2, "attempts of the dead item");
    ensure!(dead[0].last_error.is_some(), "the dead item says why");
    Ok(())
}

async fn delete_frees_key(c: Ctx) -> Outcome {
    let q = c.claims()?;
    let first = q.dyn_enqueue("q", vec![item("a")]).await?;
    let got = q.dyn_claim("q", opts("w", 1, LONG)?).await?;
    ensure!(q.dyn_delete(first[0].id()).await?, "delete");
    ensure!(!q.dyn_delete(first[0].id()).await?, "second delete");
    ensure!(
        !q.dyn_complete(got[0].claim).await?,
        "complete of a deleted item"
    );
    let again = q.dyn_enqueue("q", vec![item("a")]).await?;
    ensure!(
        matches!(again[0], Enqueued::Added(id) if id != first[0].id()),
        "re-enqueue after delete: {again:?}"
    );
    Ok(())
}

async fn invalid_inputs(c: Ctx) -> Outcome {
    let q = c.claims()?;
    for queue in ["", "a\0b"] {
        expect_err!(
            q.dyn_enqueue(queue, vec![item("a")]).await,
            StoreError::Validation(ValidationError::Name(_)),
            "enqueue to queue {queue:?}"
        );
        expect_err!(
            q.dyn_claim(queue, opts("w", 1, LONG)?).await,
            StoreError::Validation(ValidationError::Name(_)),
            "claim from queue {queue:?}"
        );
    }
    expect_err!(
        q.dyn_enqueue("q", vec![]).await,
        StoreError::Validation(ValidationError::Work(InvalidWork::ItemCount { count: 0 })),
        "an empty enqueue"
    );
    expect_err!(
        q.dyn_enqueue("q", vec![item("")]).await,
        StoreError::Validation(ValidationError::Name(_)),
        "an empty key"
    );
    expect_err!(
        q.dyn_enqueue("q", vec![item("a"), item("b"), item("a")])
            .await,
        StoreError::Validation(ValidationError::Work(InvalidWork::DuplicateKey {
            index: 2
        })),
        "a key twice in one enqueue"
    );
    let big = NewWorkItem::new("big", vec![0u8; MAX_WORK_PAYLOAD_BYTES + 1]);
    expect_err!(
        q.dyn_enqueue("q", vec![item("a"), big]).await,
        StoreError::Validation(ValidationError::Work(InvalidWork::PayloadTooLarge {
            index: 1,
            ..
        })),
        "a payload over the cap"
    );
    let at_cap = NewWorkItem::new("at-cap", vec![7u8; MAX_WORK_PAYLOAD_BYTES]);
    q.dyn_enqueue("cap", vec![at_cap]).await?;
    let got = q.dyn_claim("cap", opts("w", 1, LONG)?).await?;
    ensure_eq!(
        got.first().map(|i| i.payload.len()),
        Some(MAX_WORK_PAYLOAD_BYTES),
        "a payload at the cap round trips"
    );
    ensure!(
        q.dyn_claim("q", opts("w", 1, LONG)?).await?.is_empty(),
        "a refused enqueue added items"
    );
    for (limit, lease) in [(0, LONG), (MAX_CLAIM_BATCH + 1, LONG), (1, Duration::ZERO)] {
        expect_err!(
            ClaimOptions::new("w", limit, lease),
            StoreError::Validation(ValidationError::Work(_)),
            "claim options {limit} {lease:?}"
        );
    }
    expect_err!(
        ClaimOptions::new("", 1, LONG),
        StoreError::Validation(ValidationError::Name(_)),
        "an empty owner"
    );
    expect_err!(
        opts("w", 1, LONG)?.with_max_attempts(0),
        StoreError::Validation(ValidationError::Work(InvalidWork::MaxAttempts { .. })),
        "zero attempts"
    );
    q.dyn_enqueue("r", vec![item("a")]).await?;
    let held = q.dyn_claim("r", opts("w", 1, LONG)?).await?;
    expect_err!(
        q.dyn_renew(held[0].claim, MIN_CLAIM_LEASE / 2).await,
        StoreError::Validation(ValidationError::Work(InvalidWork::Lease { .. })),
        "renew with a lease under the minimum"
    );
    expect_err!(
        q.dyn_dead("q", 0, 0).await,
        StoreError::Validation(ValidationError::InvalidLimit { .. }),
        "dead with limit 0"
    );
    Ok(())
}

/// Operations of the model scenario.
const MODEL_OPS: usize = 400;
/// Keys the model scenario draws from.
const MODEL_KEYS: u64 = 12;

/// One side of the model scenario: a claim store and what the scenario
/// knows of it, by key (ids and tokens may differ between backends).
struct Side {
    q: Arc<dyn DynClaimStore>,
    ids: BTreeMap<String, u64>,
    held: BTreeMap<String, Claim>,
    stale: Vec<Claim>,
}

/// What one operation did, reduced to what every backend must agree on.
type Seen = String;

impl Side {
    fn new(q: Arc<dyn DynClaimStore>) -> Self {
        Self {
            q,
            ids: BTreeMap::new(),
            held: BTreeMap::new(),
            stale: Vec::new(),
        }
    }

    async fn apply(&mut self, op: &Op) -> Result<Seen, Failure> {
        Ok(match op {
            Op::Enqueue(items) => {
                let out = self.q.dyn_enqueue("model", items.clone()).await?;
                let mut seen = Vec::new();
                for (item, e) in items.iter().zip(&out) {
                    self.ids.insert(item.key().to_owned(), e.id());
                    seen.push((item.key().to_owned(), matches!(e, Enqueued::Added(_))));
                }
                format!("enqueued {seen:?}")
            }
            Op::Claim(limit) => {
                let got = self.q.dyn_claim("model", opts("w", *limit, LONG)?).await?;
                let mut seen = Vec::new();
                for it in got {
                    self.held.insert(it.key.clone(), it.claim);
                    seen.push((it.key, it.attempt, it.last_error));
                }
                format!("claimed {seen:?}")
            }
            Op::Settle(key, then) => {
                let claim = self
                    .held
                    .remove(key)
                    .ok_or_else(|| Failure(format!("{key} is not held here")))?;
                self.stale.push(claim);
                let ok = match then {
                    None => self.q.dyn_complete(claim).await?,
                    Some(t) => self.q.dyn_fail(claim, "failed", *t).await?,
                };
                format!("settled {key} {then:?}: {ok}")
            }
            Op::Stale(i) => match self.stale.get(*i) {
                Some(c) => format!("stale complete: {}", self.q.dyn_complete(*c).await?),
                None => "no stale claim".to_owned(),
            },
            Op::Requeue(key) => match self.ids.get(key) {
                Some(id) => format!("requeue {key}: {}", self.q.dyn_requeue(*id).await?),
                None => format!("requeue {key}: unknown"),
            },
            Op::Delete(key) => match self.ids.remove(key) {
                Some(id) => {
                    if let Some(c) = self.held.remove(key) {
                        self.stale.push(c);
                    }
                    format!("delete {key}: {}", self.q.dyn_delete(id).await?)
                }
                None => format!("delete {key}: unknown"),
            },
            Op::Get(key) => match self.ids.get(key) {
                Some(id) => match self.q.dyn_get(*id).await? {
                    Some(i) => format!(
                        "get {key}: {} attempts {} error {:?}",
                        i.state.as_str(),
                        i.attempts,
                        i.last_error
                    ),
                    None => format!("get {key}: none"),
                },
                None => format!("get {key}: unknown"),
            },
        })
    }
}

#[derive(Debug)]
enum Op {
    Enqueue(Vec<NewWorkItem>),
    Claim(usize),
    /// Complete (`None`) or fail a held key.
    Settle(String, Option<AfterFailure>),
    Stale(usize),
    Requeue(String),
    Delete(String),
    Get(String),
}

fn pick_op(rng: &mut Rng, model: &Side, past: Timestamp) -> Op {
    let key = |rng: &mut Rng| format!("k{}", rng.below(MODEL_KEYS));
    match rng.below(100) {
        0..=24 => {
            let mut items: Vec<NewWorkItem> = Vec::new();
            for _ in 0..=rng.below(3) {
                let k = key(rng);
                if items.iter().any(|i| i.key() == k) {
                    continue;
                }
                let mut item = NewWorkItem::new(k.clone(), k.into_bytes());
                if rng.chance(20) {
                    item = item.with_not_before(at_offset(3_600_000));
                } else if rng.chance(30) {
                    let ms = i64::try_from(rng.below(1_000)).unwrap_or(0);
                    item = item.with_not_before(Timestamp::from_unix_micros(
                        past.as_unix_micros() + ms * 1000,
                    ));
                }
                items.push(item);
            }
            Op::Enqueue(items)
        }
        25..=44 => Op::Claim(1 + usize::try_from(rng.below(4)).unwrap_or(0)),
        45..=69 if !model.held.is_empty() => {
            let keys: Vec<&String> = model.held.keys().collect();
            let k = keys[usize::try_from(rng.below(keys.len() as u64)).unwrap_or(0)].clone();
            let then = match rng.below(3) {
                0 => None,
                1 => Some(AfterFailure::Dead),
                _ => {
                    let ms = i64::try_from(rng.below(1_000)).unwrap_or(0);
                    Some(AfterFailure::RetryAt(Timestamp::from_unix_micros(
                        past.as_unix_micros() + ms * 1000,
                    )))
                }
            };
            Op::Settle(k, then)
        }
        70..=77 => Op::Stale(usize::try_from(rng.below(model.stale.len() as u64 + 1)).unwrap_or(0)),
        78..=85 => Op::Requeue(key(rng)),
        86..=91 => Op::Delete(key(rng)),
        _ => Op::Get(key(rng)),
    }
}

/// Seeded random operations give the same outcomes on the backend as on
/// the memory claim store. Leases are long and not-before times are either
/// an hour ahead or fixed times in the past, so the outcomes do not depend
/// on timing.
async fn model(c: Ctx) -> Outcome {
    let seed = std::env::var("ESKIT_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0xC1A1_5EED);
    let mut rng = Rng(seed);
    let past = at_offset(-3_600_000);
    let mut backend = Side::new(Arc::clone(c.claims()?));
    let mut memory = Side::new(Arc::new(MemoryClaimStore::new()));
    for n in 0..MODEL_OPS {
        let op = pick_op(&mut rng, &memory, past);
        let expected = memory.apply(&op).await?;
        let got = backend.apply(&op).await.map_err(|f| {
            Failure(format!(
                "seed {seed} (replay with ESKIT_MODEL_SEED={seed}), op {n} {op:?}: {}",
                f.0
            ))
        })?;
        ensure_eq!(
            got,
            expected,
            "seed {seed} (replay with ESKIT_MODEL_SEED={seed}), op {n} {op:?}"
        );
    }
    let dead = |s: &Side| {
        let q = Arc::clone(&s.q);
        async move {
            let items = q.dyn_dead("model", 0, 100).await?;
            Ok::<_, StoreError>(items.into_iter().map(|i| i.key).collect::<Vec<_>>())
        }
    };
    ensure_eq!(
        dead(&backend).await?,
        dead(&memory).await?,
        "dead keys at the end (seed {seed})"
    );
    Ok(())
}
