//! Concurrent writers and readers, checked with the history checker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use eskit_core::{
    error::error_chain,
    event::{ExpectedVersion, NewEvent, StreamName, Version},
    store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions},
};

use super::{
    Ctx, Failure, GLOBAL, Outcome, Scenario, ensure, ensure_eq, ev, scenario_list, stream,
};
use crate::executor::yield_now;
use crate::history::{HistoryRecorder, Outcome as OpOutcome, check, contiguous_from_one, versions};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![GLOBAL;
        "stress.writers_on_distinct_streams" => distinct_streams,
        "stress.same_stream_occ_with_retries" => same_stream_occ,
        "stress.append_any_racing_exact_versions" => any_racing_exact,
        "stress.idempotent_retries_write_once" => idempotent_retries,
        "stress.readers_during_writes" => readers_during_writes,
    ]
}

/// A small deterministic generator, so runs are reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn batch(n: usize, tag: &str) -> Result<Vec<NewEvent>, Failure> {
    (0..n).map(|i| ev("Stress", format!("{tag}/{i}"))).collect()
}

async fn verify(
    c: &Ctx,
    recorder: &HistoryRecorder,
) -> Result<crate::history::CheckReport, Failure> {
    let all = c.read_everything().await?;
    let report = check(&recorder.history(), &all);
    ensure!(report.is_valid(), "history check failed: {report}");
    Ok(report)
}

async fn distinct_streams(c: Ctx) -> Outcome {
    let size = c.stress();
    let recorder = HistoryRecorder::new();
    let gate = c.gate(size.writers);
    let tasks: Vec<_> = (0..size.writers)
        .map(|w| {
            let (c2, rec, gate) = (c.clone(), recorder.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                let mut rng = Rng::new(w as u64 + 1);
                for i in 0..size.appends_per_writer {
                    let s = stream(&format!("w{w}-s{}", i % 4))?;
                    let events = batch(1 + rng.below(5) as usize, &format!("{w}/{i}"))?;
                    let op = rec.invoke(w as u64, &s, ExpectedVersion::Any, &events);
                    let r = c2.append(&s, ExpectedVersion::Any, events).await;
                    rec.complete(op, &r);
                    r.map_err(|e| Failure(format!("writer {w} append {i}: {}", error_chain(&e))))?;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let report = verify(&c, &recorder).await?;
    let h = recorder.history();
    ensure_eq!(
        h.ok_count(),
        size.writers * size.appends_per_writer,
        "acknowledged appends"
    );
    ensure_eq!(
        report.read,
        h.ok_event_count(),
        "events stored compared with events acknowledged"
    );
    Ok(())
}

async fn same_stream_occ(c: Ctx) -> Outcome {
    let size = c.stress();
    let s = stream("occ")?;
    let recorder = HistoryRecorder::new();
    let gate = c.gate(size.writers);
    let tasks: Vec<_> = (0..size.writers)
        .map(|w| {
            let (c2, rec, s, gate) = (c.clone(), recorder.clone(), s.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                let mut done = 0;
                let mut attempts = 0usize;
                while done < size.appends_per_writer {
                    attempts += 1;
                    if attempts > size.appends_per_writer * 1000 {
                        return Err(Failure(format!(
                            "writer {w} starved after {attempts} attempts"
                        )));
                    }
                    let v = c2.events().stream_version(&s).await?;
                    // Give other writers the processor between read and
                    // write, so even a store that never blocks sees conflicts
                    // on a busy machine.
                    std::thread::yield_now();
                    yield_now().await;
                    let events = batch(1, &format!("{w}/{done}"))?;
                    let exp = ExpectedVersion::Exact(v);
                    let op = rec.invoke(w as u64, &s, exp, &events);
                    let r = c2.append(&s, exp, events).await;
                    rec.complete(op, &r);
                    match r {
                        Ok(_) => done += 1,
                        Err(e) if e.is_conflict() => {}
                        Err(e) => return Err(Failure(format!("writer {w}: {}", error_chain(&e)))),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let total = size.writers * size.appends_per_writer;
    let report = verify(&c, &recorder).await?;
    let h = recorder.history();
    ensure_eq!(h.ok_count(), total, "acknowledged appends");
    ensure_eq!(report.read, total, "events stored");
    let got = c.load_all(&s).await?;
    ensure_eq!(got.len(), total, "stream length");
    ensure!(contiguous_from_one(&got), "versions not contiguous from 1");
    ensure!(
        h.conflict_count() > 0,
        "no conflicts in {total} appends: the writers never overlapped, so nothing was tested"
    );
    ensure_eq!(
        h.ops
            .iter()
            .filter(|o| matches!(
                o.outcome,
                OpOutcome::Fail {
                    conflict: false,
                    ..
                }
            ))
            .count(),
        0,
        "failures other than conflicts"
    );
    Ok(())
}

async fn any_racing_exact(c: Ctx) -> Outcome {
    let size = c.stress();
    let s = stream("any-vs-exact")?;
    let recorder = HistoryRecorder::new();
    let per = size.appends_per_writer.min(100);
    let gate = c.gate(size.writers.max(2));
    let tasks: Vec<_> = (0..size.writers.max(2))
        .map(|w| {
            let (c2, rec, s, gate) = (c.clone(), recorder.clone(), s.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                let mut done = 0;
                while done < per {
                    let exp = if w % 2 == 0 {
                        ExpectedVersion::Any
                    } else {
                        ExpectedVersion::Exact(c2.events().stream_version(&s).await?)
                    };
                    let events = batch(1 + done % 3, &format!("{w}/{done}"))?;
                    let op = rec.invoke(w as u64, &s, exp, &events);
                    let r = c2.append(&s, exp, events).await;
                    rec.complete(op, &r);
                    match r {
                        Ok(_) => done += 1,
                        Err(e) if e.is_conflict() && w % 2 == 1 => {}
                        Err(e) => {
                            return Err(Failure(format!(
                                "writer {w} ({exp}): {}",
                                error_chain(&e)
                            )));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    // The checker flags any exact-version append acknowledged at another version.
    let report = verify(&c, &recorder).await?;
    ensure_eq!(
        report.read,
        recorder.history().ok_event_count(),
        "events stored compared with acknowledged"
    );
    Ok(())
}

async fn idempotent_retries(c: Ctx) -> Outcome {
    let keys = 200usize;
    let recorder = HistoryRecorder::new();
    let writers = c.stress().writers.max(2);
    // Every key is sent by 1 to 3 writers at once (concurrent duplicates),
    // each with the same content and the same event ids.
    let mut plan: Vec<Vec<(usize, usize)>> = vec![Vec::new(); writers];
    let mut rng = Rng::new(7);
    for k in 0..keys {
        let copies = 1 + rng.below(3) as usize;
        for j in 0..copies {
            plan[(k + j) % writers].push((k, j));
        }
    }
    let events_of: Arc<Vec<Vec<NewEvent>>> = Arc::new(
        (0..keys)
            .map(|k| batch(1 + k % 2, &format!("key-{k}")))
            .collect::<Result<_, _>>()?,
    );
    let tasks: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(w, todo)| {
            let (c2, rec, events_of) = (c.clone(), recorder.clone(), Arc::clone(&events_of));
            c.spawn(async move {
                for (k, _) in todo {
                    let s = stream(&format!("idem-{}", k % 10))?;
                    let events = events_of[k].clone();
                    let op = rec.invoke(w as u64, &s, ExpectedVersion::Any, &events);
                    let opts = AppendOptions::new().with_idempotency_key(format!("key-{k}"));
                    let r = c2
                        .events()
                        .append(&s, ExpectedVersion::Any, events, opts)
                        .await;
                    rec.complete(op, &r);
                    r.map_err(|e| Failure(format!("writer {w} key {k}: {}", error_chain(&e))))?;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let report = verify(&c, &recorder).await?;
    let want: usize = events_of.iter().map(Vec::len).sum();
    ensure_eq!(report.read, want, "events stored (each key written once)");
    ensure_eq!(
        recorder.history().ok_event_count(),
        want,
        "events reported as written (not deduplicated)"
    );
    Ok(())
}

async fn readers_during_writes(c: Ctx) -> Outcome {
    let size = c.stress();
    let writers = size.writers.clamp(2, 4);
    let per = size.appends_per_writer.min(150);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let streams: Vec<StreamName> = (0..writers)
        .map(|w| stream(&format!("rw-{w}")))
        .collect::<Result<_, _>>()?;
    let gate = c.gate(writers + 2);
    let writer_tasks: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(w, s)| {
            let (c2, s, gate) = (c.clone(), s.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                for i in 0..per {
                    // Batches of 3: readers must see all of a batch or none.
                    c2.append(
                        &s,
                        ExpectedVersion::Exact(Version::new(i as u64 * 3)),
                        batch(3, &format!("{w}/{i}"))?,
                    )
                    .await
                    .map_err(|e| Failure(format!("writer {w} append {i}: {}", error_chain(&e))))?;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    let reader_tasks: Vec<_> = (0..2)
        .map(|r| {
            let (c2, stop, reads, streams, gate) = (
                c.clone(),
                Arc::clone(&stop),
                Arc::clone(&reads),
                streams.clone(),
                gate.clone(),
            );
            c.spawn(async move {
                gate.wait().await;
                let mut i = 0usize;
                // At least one read, even if the writers finished first.
                while i == 0 || !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let s = &streams[i % streams.len()];
                    let got = c2.events().load(s, LoadOptions::new()).await?;
                    if !contiguous_from_one(&got) || got.len() % 3 != 0 {
                        return Err(Failure(format!(
                            "reader {r} saw {s} with versions {:?}",
                            versions(&got)
                        )));
                    }
                    let all = c2
                        .global()?
                        .read(ReadOptions::from_start(10_000))
                        .await?
                        .events;
                    if !crate::history::strictly_increasing(&all) {
                        return Err(Failure(format!(
                            "reader {r} saw global positions out of order"
                        )));
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                    yield_now().await;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    let mut first_err = None;
    for t in writer_tasks {
        if let Err(e) = t.await.map_err(Failure::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in reader_tasks {
        if let Err(e) = t.await.map_err(Failure::from).and_then(|r| r) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    ensure!(
        reads.load(Ordering::SeqCst) > 0,
        "readers completed no reads"
    );
    for s in &streams {
        ensure_eq!(c.load_all(s).await?.len(), per * 3, "events in {s}");
    }
    Ok(())
}
