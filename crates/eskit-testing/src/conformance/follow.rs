//! Tail followers: readers follow the log from their cursor while writers
//! commit, and each sees exactly the final log in cursor order (the read
//! contract's gap safety under concurrency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eskit_core::{
    error::error_chain,
    event::{ExpectedVersion, GlobalCursor, RawEvent},
    store::{GlobalPager, GlobalReader, ReadOptions},
};

use super::{Ctx, Failure, GLOBAL, Outcome, Scenario, ensure, ev, scenario_list, stream};
use crate::executor::yield_now;

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![GLOBAL;
        "follow.tail_followers_see_the_final_log" => tail_followers,
        "follow.a_follower_at_the_head_sees_each_commit" => step_follower,
    ]
}

/// Events per follower page: small, so followers read often mid-write.
const PAGE: usize = 7;

/// What a follower saw of one event.
type Seen = (GlobalCursor, String, u64);

fn key(e: &RawEvent) -> Seen {
    (e.cursor(), e.stream.to_string(), e.version.get())
}

/// Follows the log from the start until the writers are done and it has
/// caught up with the head read after they finished.
async fn follow(c: Ctx, odd_only: bool, done: Arc<AtomicBool>) -> Result<Vec<Seen>, Failure> {
    let global = c.global()?.clone();
    let mut options = ReadOptions::from_start(PAGE);
    if odd_only {
        options = options.with_event_types([super::ty("Odd")?]);
    }
    let mut seen = Vec::new();
    let mut cursor = GlobalCursor::START;
    let mut final_head: Option<GlobalCursor> = None;
    loop {
        let page = global.read(options.clone().with_after(cursor)).await?;
        ensure!(
            page.next >= cursor,
            "next {} went back from {cursor}",
            page.next
        );
        for e in &page.events {
            ensure!(
                e.cursor() > cursor,
                "event at {} returned after cursor {cursor}",
                e.cursor()
            );
            seen.push(key(e));
        }
        cursor = page.next;
        if let Some(h) = final_head {
            if cursor >= h && page.events.is_empty() {
                return Ok(seen);
            }
        } else if done.load(Ordering::Acquire) {
            final_head = Some(global.head().await?);
        }
        if page.events.is_empty() {
            yield_now().await;
        }
    }
}

async fn tail_followers(c: Ctx) -> Outcome {
    let size = c.stress();
    let done = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = [false, false, true]
        .into_iter()
        .map(|odd| {
            let (c2, done) = (c.clone(), done.clone());
            c.spawn(follow(c2, odd, done))
        })
        .collect();
    let gate = c.gate(size.writers);
    let writers: Vec<_> = (0..size.writers)
        .map(|w| {
            let (c2, gate) = (c.clone(), gate.clone());
            c.spawn(async move {
                gate.wait().await;
                for i in 0..size.appends_per_writer {
                    // Own streams and two shared ones, one to three events.
                    let s = match i % 3 {
                        0 => stream(&format!("follow-shared-{}", i % 2))?,
                        _ => stream(&format!("follow-w{w}-{}", i % 4))?,
                    };
                    let events = (0..1 + (i + w) % 3)
                        .map(|k| {
                            let t = if (i + k) % 2 == 0 { "Even" } else { "Odd" };
                            ev(t, format!("{w}/{i}/{k}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    c2.append(&s, ExpectedVersion::Any, events)
                        .await
                        .map_err(|e| Failure(format!("writer {w}: {}", error_chain(&e))))?;
                }
                Ok::<_, Failure>(())
            })
        })
        .collect();
    for t in writers {
        t.await??;
    }
    done.store(true, Ordering::Release);
    let log = c.read_everything().await?;
    let all: Vec<Seen> = log.iter().map(key).collect();
    let odd: Vec<Seen> = log
        .iter()
        .filter(|e| e.event_type == "Odd")
        .map(key)
        .collect();
    ensure!(!all.is_empty(), "the writers stored nothing");
    for (i, t) in followers.into_iter().enumerate() {
        let seen = t.await??;
        let want = if i == 2 { &odd } else { &all };
        if &seen != want {
            let missing = want.iter().filter(|e| !seen.contains(e)).count();
            let extra = seen.iter().filter(|e| !want.contains(e)).count();
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            return Err(Failure(format!(
                "follower {i}: expected the final log's {} events, saw {}: {missing} skipped, \
                 {extra} unexpected, {} duplicated, order {}",
                want.len(),
                seen.len(),
                seen.len() - sorted.len(),
                if sorted.len() == seen.len() && sorted == seen {
                    "kept"
                } else {
                    "broken"
                }
            )));
        }
        // Per-stream versions in order (implied by equality with the final
        // log, checked again so a failure names it).
        let mut last: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for (_, s, v) in &seen {
            let prev = last.insert(s.as_str(), *v).unwrap_or(0);
            ensure!(*v > prev, "follower {i} saw {s} version {v} after {prev}");
        }
    }
    Ok(())
}

/// A follower that reads after every single commit (always at the head, where
/// a late commit would slip past it) sees exactly the final log.
async fn step_follower(c: Ctx) -> Outcome {
    let global = c.global()?.clone();
    let mut cursor = GlobalCursor::START;
    let mut seen = Vec::new();
    for i in 0..20 {
        let s = stream(&format!("step-{}", i % 3))?;
        c.append(&s, ExpectedVersion::Any, vec![ev("Even", format!("{i}"))?])
            .await?;
        let page = global.read(ReadOptions::new(cursor, PAGE)).await?;
        ensure!(
            page.next >= cursor,
            "next {} went back from {cursor}",
            page.next
        );
        seen.extend(page.events.iter().map(key));
        cursor = page.next;
    }
    seen.extend(
        GlobalPager::new(&global, ReadOptions::new(cursor, PAGE))
            .collect()
            .await?
            .iter()
            .map(key),
    );
    let all: Vec<Seen> = c.read_everything().await?.iter().map(key).collect();
    let missing: Vec<&Seen> = all.iter().filter(|e| !seen.contains(e)).collect();
    ensure!(
        seen == all,
        "expected the final log's {} events, the follower saw {} ({} skipped: {:?})",
        all.len(),
        seen.len(),
        missing.len(),
        missing
            .iter()
            .map(|(c, _, _)| c.to_string())
            .collect::<Vec<_>>()
    );
    Ok(())
}
