//! Transactional projection sinks: a page's effects and the cursor after it
//! commit together or not at all, and a page delivered again (a retry after
//! an unknown outcome, an overlap after a restart, a racing second run) has
//! its effect once. This is the contract a subscription's exactly-once
//! effect on a read model rests on.

use std::sync::Arc;

use eskit_core::{
    event::{EventId, ExpectedVersion, GlobalCursor, RawEvent},
    store::{GlobalReader, ProjectionSink, ReadOptions},
};

use super::{
    Capability, Context, Ctx, Effects, Failure, Outcome, Scenario, ensure, ensure_eq, ev,
    scenario_list, stream,
};

pub(crate) fn scenarios() -> Vec<Scenario> {
    scenario_list![SINK;
        "sink.page_and_cursor_commit_together" => together,
        "sink.redelivered_page_has_effect_once" => redelivered,
        "sink.overlapping_page_applies_only_new_events" => overlapping,
        "sink.refused_page_stores_nothing" => refused,
        "sink.cursor_never_moves_back" => never_back,
        "sink.names_keep_their_own_cursors" => names,
        "sink.racing_applies_of_one_page_apply_once" => racing,
    ]
}

const SINK: &[Capability] = &[
    Capability::Events,
    Capability::GlobalReads,
    Capability::Sink,
];

const NAME: &str = "sink-projection";

/// Appends one event per payload and returns the stored events and the
/// cursor after the last, as a global read delivers them.
async fn log(c: &Ctx, payloads: &[&str]) -> Result<(Vec<RawEvent>, GlobalCursor), Failure> {
    let s = stream("sink-log")?;
    for p in payloads {
        c.append(&s, ExpectedVersion::Any, vec![ev("Happened", *p)?])
            .await
            .ctx("appending")?;
    }
    let page = c
        .global()?
        .read(ReadOptions::from_start(1000))
        .await
        .ctx("reading the log")?;
    ensure_eq!(page.events.len(), payloads.len(), "events read back");
    Ok((page.events, page.next))
}

fn ids(events: &[RawEvent]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

async fn effects(effects: &Effects) -> Result<Vec<EventId>, Failure> {
    effects()
        .await
        .map_err(|e| Failure(format!("reading the sink's effects: {e}")))
}

async fn apply(
    sink: &Arc<dyn eskit_core::store::DynProjectionSink>,
    name: &str,
    events: &[RawEvent],
    next: GlobalCursor,
) -> Outcome {
    sink.apply(name, events, next)
        .await
        .map_err(|e| Failure(format!("applying a page: {e}")))
}

async fn together(c: Ctx) -> Outcome {
    let (sink, fx) = c.sink()?;
    ensure_eq!(
        sink.cursor(NAME).await.ctx("the cursor before any page")?,
        None,
        "the cursor of a new name"
    );
    let (events, _) = log(&c, &["a", "b", "c", "d"]).await?;
    let first = events[1].cursor();
    apply(sink, NAME, &events[..2], first).await?;
    ensure_eq!(
        effects(fx).await?,
        ids(&events[..2]),
        "effects after one page"
    );
    ensure_eq!(
        sink.cursor(NAME).await.ctx("the cursor")?,
        Some(first),
        "the cursor after one page"
    );
    let last = events[3].cursor();
    apply(sink, NAME, &events[2..], last).await?;
    ensure_eq!(effects(fx).await?, ids(&events), "effects after two pages");
    ensure_eq!(
        sink.cursor(NAME).await.ctx("the cursor")?,
        Some(last),
        "the cursor after two pages"
    );
    // An empty page moves the cursor (past filtered-out events) alone.
    let further = GlobalCursor::new(
        last.tx(),
        eskit_core::event::Position::new(last.position().get() + 5),
    );
    apply(sink, NAME, &[], further).await?;
    ensure_eq!(
        effects(fx).await?,
        ids(&events),
        "effects after an empty page"
    );
    ensure_eq!(
        sink.cursor(NAME).await.ctx("the cursor")?,
        Some(further),
        "the cursor after an empty page"
    );
    Ok(())
}

async fn redelivered(c: Ctx) -> Outcome {
    let (sink, fx) = c.sink()?;
    let (events, next) = log(&c, &["a", "b", "c"]).await?;
    for _ in 0..3 {
        apply(sink, NAME, &events, next).await?;
    }
    ensure_eq!(
        effects(fx).await?,
        ids(&events),
        "effects after three deliveries"
    );
    Ok(())
}

async fn overlapping(c: Ctx) -> Outcome {
    let (sink, fx) = c.sink()?;
    let (events, next) = log(&c, &["a", "b", "c", "d", "e"]).await?;
    apply(sink, NAME, &events[..3], events[2].cursor()).await?;
    // A restart that read from an older checkpoint delivers b..e.
    apply(sink, NAME, &events[1..], next).await?;
    ensure_eq!(effects(fx).await?, ids(&events), "effects after an overlap");
    Ok(())
}

async fn refused(c: Ctx) -> Outcome {
    let (sink, fx) = c.sink()?;
    let (events, next) = log(&c, &["a", "b", "refuse", "d"]).await?;
    apply(sink, NAME, &events[..1], events[0].cursor()).await?;
    let r = sink.apply(NAME, &events[1..], next).await;
    ensure!(r.is_err(), "a page with a refused event was stored");
    ensure_eq!(
        effects(fx).await?,
        ids(&events[..1]),
        "effects after a refused page (none of it may stay)"
    );
    ensure_eq!(
        sink.cursor(NAME).await.ctx("the cursor")?,
        Some(events[0].cursor()),
        "the cursor after a refused page"
    );
    Ok(())
}

async fn never_back(c: Ctx) -> Outcome {
    let (sink, fx) = c.sink()?;
    let (events, next) = log(&c, &["a", "b", "c"]).await?;
    apply(sink, NAME, &events, next).await?;
    // A stale page from a dropped run arrives late.
    apply(sink, NAME, &events[..1], events[0].cursor()).await?;
    ensure_eq!(
        sink.cursor(NAME).await.ctx("the cursor")?,
        Some(next),
        "the cursor after a stale page"
    );
    ensure_eq!(
        effects(fx).await?,
        ids(&events),
        "effects after a stale page"
    );
    Ok(())
}

async fn names(c: Ctx) -> Outcome {
    let (sink, fx) = c.sink()?;
    let (events, next) = log(&c, &["a", "b"]).await?;
    apply(sink, "sink-one", &events[..1], events[0].cursor()).await?;
    apply(sink, "sink-two", &events, next).await?;
    ensure_eq!(
        sink.cursor("sink-one").await.ctx("a cursor")?,
        Some(events[0].cursor()),
        "the first name's cursor"
    );
    ensure_eq!(
        sink.cursor("sink-two").await.ctx("a cursor")?,
        Some(next),
        "the second name's cursor"
    );
    // Each name applies its own pages: the model saw a, then a and b.
    let mut want = ids(&events[..1]);
    want.extend(ids(&events));
    ensure_eq!(effects(fx).await?, want, "effects of two names");
    Ok(())
}

async fn racing(c: Ctx) -> Outcome {
    const RUNS: usize = 4;
    let (sink, fx) = c.sink()?;
    let (events, next) = log(&c, &["a", "b", "c", "d", "e", "f"]).await?;
    let gate = c.gate(RUNS);
    let mut tasks = Vec::new();
    for _ in 0..RUNS {
        let (sink, events, gate) = (Arc::clone(sink), events.clone(), gate.clone());
        tasks.push(c.spawn(async move {
            gate.wait().await;
            sink.apply(NAME, &events, next)
                .await
                .map_err(|e| Failure(format!("a racing apply: {e}")))
        }));
    }
    for t in tasks {
        t.await??;
    }
    ensure_eq!(
        effects(fx).await?,
        ids(&events),
        "effects after {RUNS} racing applies of one page"
    );
    Ok(())
}
