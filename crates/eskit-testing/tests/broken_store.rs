//! The suite tested with deliberately broken stores: each defect must make
//! the scenarios that guard against it fail, while the healthy memory store
//! passes them.

use std::time::Duration;

use eskit_core::{
    error::{BoxError, StoreError},
    event::{AppendResult, ExpectedVersion, GlobalCursor, NewEvent, RawEvent, StreamName, Version},
    memory::MemoryStore,
    store::{
        AppendOptions, CommitFeed, EventStore, FeedError, GlobalBatch, GlobalReader, Listener,
        LoadOptions, ReadOptions, StreamLifecycle, StreamStatus,
    },
};
use eskit_testing::conformance::{Fixture, Report, Status, Suite};

#[derive(Clone, Copy)]
enum Defect {
    /// Appends ignore the expected version.
    SkipVersionCheck,
    /// The version check and the write are not atomic.
    RacyVersionCheck,
    /// Idempotency keys are dropped before the append.
    IgnoreIdempotencyKey,
    /// Reads make an earlier event visible after later ones: every fifth
    /// position stays hidden until three newer positions exist, as an
    /// uncommitted transaction holding a low position would, while `next`
    /// moves past it.
    LateCommit,
}

struct Broken {
    inner: MemoryStore,
    defect: Defect,
}

impl EventStore for Broken {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        match self.defect {
            Defect::SkipVersionCheck => {
                self.inner
                    .append(stream, ExpectedVersion::Any, events, options)
                    .await
            }
            Defect::RacyVersionCheck => {
                let current = self.inner.stream_version(stream).await?;
                if !expected.matches(current) {
                    return Err(StoreError::WrongExpectedVersion {
                        stream: stream.clone(),
                        expected,
                        actual: current,
                    });
                }
                // The window between check and write that a real backend
                // closes with a transaction or a compare-and-set. It yields
                // while it lasts, so the other racers run their checks in it
                // whether they share this thread or run on others (a
                // blocking sleep let racers on one thread run one after
                // another, and the race was sometimes won fairly).
                let open = std::time::Instant::now();
                while open.elapsed() < Duration::from_millis(20) {
                    eskit_core::rt::yield_now().await;
                }
                self.inner
                    .append(stream, ExpectedVersion::Any, events, options)
                    .await
            }
            Defect::LateCommit => self.inner.append(stream, expected, events, options).await,
            Defect::IgnoreIdempotencyKey => {
                let stripped = AppendOptions::new()
                    .with_metadata(options.metadata().clone().with_extra("note", "key dropped"));
                let stripped = match options.timestamp() {
                    Some(t) => stripped.with_timestamp(t),
                    None => stripped,
                };
                self.inner.append(stream, expected, events, stripped).await
            }
        }
    }

    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        self.inner.load(stream, options).await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        self.inner.stream_version(stream).await
    }
}

impl GlobalReader for Broken {
    async fn read(&self, options: ReadOptions) -> Result<GlobalBatch, StoreError> {
        let mut page = self.inner.read(options).await?;
        if let Defect::LateCommit = self.defect {
            let head = page.head.position().get();
            page.events
                .retain(|e| !(e.position.get() % 5 == 0 && head - e.position.get() < 3));
        }
        Ok(page)
    }

    async fn head(&self) -> Result<GlobalCursor, StoreError> {
        self.inner.head().await
    }
}

impl CommitFeed for Broken {
    fn listen(&self) -> Result<Listener, FeedError> {
        self.inner.listen()
    }
}

impl StreamLifecycle for Broken {
    async fn tombstone(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        self.inner.tombstone(stream, reason).await
    }

    async fn archive(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        self.inner.archive(stream, reason).await
    }

    async fn restore(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.inner.restore(stream).await
    }

    async fn delete(&self, stream: &StreamName) -> Result<(), StoreError> {
        self.inner.delete(stream).await
    }

    async fn status(&self, stream: &StreamName) -> Result<StreamStatus, StoreError> {
        self.inner.status(stream).await
    }
}

fn run(defect: Defect, filter: &[&str]) -> Report {
    let mut suite = Suite::new("broken", move || async move {
        Ok::<_, BoxError>(Fixture::store(Broken {
            inner: MemoryStore::new(),
            defect,
        }))
    });
    for f in filter {
        suite = suite.filter(*f);
    }
    suite.run()
}

fn healthy(filter: &[&str]) -> Report {
    let mut suite = Suite::new("memory", || async {
        Ok::<_, BoxError>(Fixture::store(MemoryStore::new()))
    });
    for f in filter {
        suite = suite.filter(*f);
    }
    suite.run()
}

/// Asserts that each named scenario failed on the broken store and passed on
/// the healthy one, and that the failure names backend-visible facts.
fn assert_caught(broken: &Report, healthy: &Report, names: &[&str]) -> Result<(), String> {
    for name in names {
        let b = broken
            .get(name)
            .ok_or_else(|| format!("scenario {name} did not run on the broken store"))?;
        let Status::Failed(why) = &b.status else {
            return Err(format!(
                "scenario {name} passed on the broken store\n{broken}"
            ));
        };
        if !why.contains("expected") {
            return Err(format!(
                "failure of {name} does not say what was expected: {why}"
            ));
        }
        let h = healthy
            .get(name)
            .ok_or_else(|| format!("scenario {name} did not run on the memory store"))?;
        if h.status != Status::Passed {
            return Err(format!(
                "scenario {name} did not pass on the memory store: {:?}",
                h.status
            ));
        }
    }
    Ok(())
}

#[test]
fn skipped_version_check_is_caught() -> Result<(), String> {
    let filter = ["expected.", "concurrency.", "stress.same_stream"];
    let broken = run(Defect::SkipVersionCheck, &filter);
    let healthy = healthy(&filter);
    assert_caught(
        &broken,
        &healthy,
        &[
            "expected.no_stream_on_existing_stream_conflicts",
            "expected.stream_exists_on_missing_stream_conflicts",
            "expected.exact_stale_version_conflicts",
            "expected.exact_future_version_conflicts",
            "expected.exact_zero_means_no_stream",
            "expected.conflict_writes_nothing",
            "expected.failed_append_leaves_no_stream",
            "concurrency.no_stream_race_has_one_winner",
            "concurrency.exact_version_race_has_one_winner",
            "stress.same_stream_occ_with_retries",
        ],
    )?;
    // Scenarios that only use ExpectedVersion::Any still pass: the failures
    // point at the defect, not at everything.
    for name in [
        "expected.any_on_new_stream",
        "expected.any_on_existing_stream",
    ] {
        if broken.get(name).map(|r| &r.status) != Some(&Status::Passed) {
            return Err(format!(
                "{name} should pass on a store without version checks"
            ));
        }
    }
    let line = broken.summary();
    if !line.starts_with("conformance broken: ") || broken.failed() < 9 {
        return Err(format!("unexpected summary `{line}`"));
    }
    let printed = broken.to_string();
    if !printed.contains("FAILED  broken expected.exact_stale_version_conflicts: ") {
        return Err(format!(
            "failure line does not name backend and scenario:\n{printed}"
        ));
    }
    Ok(())
}

#[test]
fn non_atomic_version_check_is_caught() -> Result<(), String> {
    let filter = [
        "concurrency.no_stream_race",
        "concurrency.exact_version_race",
        "expected.exact_stale",
    ];
    let broken = run(Defect::RacyVersionCheck, &filter);
    let healthy = healthy(&filter);
    // Sequential checks still hold; only the races expose the defect.
    if broken
        .get("expected.exact_stale_version_conflicts")
        .map(|r| &r.status)
        != Some(&Status::Passed)
    {
        return Err("a racy store still checks versions sequentially".into());
    }
    assert_caught(
        &broken,
        &healthy,
        &[
            "concurrency.no_stream_race_has_one_winner",
            "concurrency.exact_version_race_has_one_winner",
        ],
    )
}

#[test]
fn ignored_idempotency_key_is_caught() -> Result<(), String> {
    let filter = ["idempotency."];
    let broken = run(Defect::IgnoreIdempotencyKey, &filter);
    let healthy = healthy(&filter);
    assert_caught(
        &broken,
        &healthy,
        &[
            "idempotency.retry_returns_original_records",
            "idempotency.retry_with_stale_expected_version",
            "idempotency.different_payload_conflicts",
            "idempotency.key_stored_in_metadata",
            "idempotency.concurrent_duplicates_write_once",
        ],
    )
}

#[test]
fn late_commit_is_caught() -> Result<(), String> {
    let filter = ["follow."];
    let broken = run(Defect::LateCommit, &filter);
    let healthy = healthy(&filter);
    assert_caught(
        &broken,
        &healthy,
        // The concurrent scenario catches it only when a follower happens to
        // read at the head mid-write; the stepped one always does.
        &["follow.a_follower_at_the_head_sees_each_commit"],
    )
}

#[test]
fn missing_capabilities_are_not_run_or_fail_when_required() -> Result<(), String> {
    let lenient = Suite::new("events-only", || async {
        Ok::<_, BoxError>(Fixture::event_store(MemoryStore::new()))
    })
    .filter("snapshot.missing_is_none")
    .filter("append.round_trip")
    .run();
    if (lenient.passed(), lenient.failed(), lenient.not_run()) != (1, 0, 1) {
        return Err(format!("lenient run:\n{lenient}"));
    }
    let strict = Suite::new("events-only", || async {
        Ok::<_, BoxError>(Fixture::event_store(MemoryStore::new()))
    })
    .filter("snapshot.missing_is_none")
    .require_all()
    .run();
    if strict.failed_names() != ["snapshot.missing_is_none"] {
        return Err(format!("strict run:\n{strict}"));
    }
    Ok(())
}

#[test]
fn factory_failure_is_reported() -> Result<(), String> {
    let report = Suite::new("down", || async { Err::<Fixture, _>("connection refused") })
        .filter("append.round_trip")
        .run();
    match report.get("append.round_trip").map(|r| &r.status) {
        Some(Status::Failed(why)) if why.contains("connection refused") => Ok(()),
        other => Err(format!("factory failure reported as {other:?}")),
    }
}

#[test]
fn scenario_names_are_unique_and_many() -> Result<(), String> {
    let names = eskit_testing::conformance::scenario_names();
    let unique: std::collections::HashSet<_> = names.iter().collect();
    if unique.len() != names.len() {
        return Err("duplicate scenario names".into());
    }
    if names.len() < 60 {
        return Err(format!("only {} scenarios", names.len()));
    }
    Ok(())
}

#[test]
fn the_model_check_catches_each_defect() -> Result<(), String> {
    let filter = ["model."];
    let healthy = healthy(&filter);
    for defect in [Defect::SkipVersionCheck, Defect::IgnoreIdempotencyKey] {
        let broken = run(defect, &filter);
        assert_caught(
            &broken,
            &healthy,
            &[
                "model.random_operations_seed_1",
                "model.random_operations_seed_2",
                "model.random_operations_seed_3",
                "model.random_operations_chosen_seed",
            ],
        )?;
    }
    Ok(())
}
