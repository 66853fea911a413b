//! The SQLite claim store across handles that each have their own writer
//! connection, as separate processes do: claims stay exclusive (each item
//! done once), items and metadata survive a reopen, and a deleted item's id
//! is never reused.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TempDir;
use eskit_core::{
    event::Metadata,
    rt::block_on,
    store::{ClaimOptions, ClaimStore, Enqueued, NewWorkItem, WorkState},
};
use eskit_sqlite::SqliteStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn claims_are_exclusive_across_writer_connections() -> TestResult {
    let dir = TempDir::new("claims-exclusive")?;
    let path = dir.file("events.db");
    let stores = [SqliteStore::open(&path)?, SqliteStore::open(&path)?];
    let items = 300;
    let batch: Vec<_> = (0..items)
        .map(|i| NewWorkItem::new(format!("job-{i}"), vec![]))
        .collect();
    block_on(stores[0].claims().enqueue("jobs", batch))?;
    let done: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let claims = stores[w % 2].claims();
            let done = Arc::clone(&done);
            std::thread::spawn(move || -> Result<(), String> {
                let options = ClaimOptions::new(format!("worker-{w}"), 5, Duration::from_secs(300))
                    .map_err(|e| e.to_string())?;
                loop {
                    let got = block_on(claims.claim("jobs", options.clone()))
                        .map_err(|e| e.to_string())?;
                    if got.is_empty() {
                        return Ok(());
                    }
                    for it in got {
                        if !block_on(claims.complete(it.claim)).map_err(|e| e.to_string())? {
                            return Err(format!("complete of {} refused", it.key));
                        }
                        *done
                            .lock()
                            .map_err(|_| "poisoned")?
                            .entry(it.key)
                            .or_default() += 1;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a worker panicked")??;
    }
    let done = done.lock().map_err(|_| "poisoned")?;
    let twice: Vec<_> = done.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "items done more than once: {twice:?}");
    assert_eq!(done.len(), items);
    for s in &stores {
        block_on(s.close());
    }
    Ok(())
}

#[test]
fn items_survive_a_reopen_and_ids_are_never_reused() -> TestResult {
    let dir = TempDir::new("claims-reopen")?;
    let path = dir.file("events.db");
    let store = SqliteStore::open(&path)?;
    let meta = Metadata::new()
        .with_correlation_id("corr-9")
        .with_causation_id("evt-1");
    let added = block_on(store.claims().enqueue(
        "mail",
        vec![
            NewWorkItem::new("a", b"payload-a".to_vec()).with_metadata(meta.clone()),
            NewWorkItem::new("b", vec![]),
        ],
    ))?;
    let (a, b) = (added[0].id(), added[1].id());
    let claimed = block_on(
        store
            .claims()
            .claim("mail", ClaimOptions::new("w", 1, Duration::from_secs(300))?),
    )?;
    assert_eq!(claimed[0].claim.id, a);
    // The newest item is dropped: its id must not come back.
    assert!(block_on(store.claims().delete(b))?);
    block_on(store.close());

    let store = SqliteStore::open(&path)?;
    let item = block_on(store.claims().get(a))?.ok_or("item a gone after reopen")?;
    assert_eq!(item.metadata, meta);
    assert_eq!(item.payload, b"payload-a");
    assert!(matches!(item.state, WorkState::Claimed { ref owner, .. } if owner == "w"));
    assert!(block_on(store.claims().complete(claimed[0].claim))?);
    let again = block_on(
        store
            .claims()
            .enqueue("mail", vec![NewWorkItem::new("b", vec![])]),
    )?;
    assert!(
        matches!(again[0], Enqueued::Added(id) if id > b),
        "a deleted item's id was reused: {again:?}"
    );
    block_on(store.close());
    Ok(())
}
