//! The runner: the first failure stops every service and is returned, a
//! panic too, the shutdown deadline aborts what does not stop, and a child
//! process running a subscription and a todo processor under
//! `run_until_signal` shuts down gracefully on SIGTERM (the item in hand is
//! finished, the process exits 0).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eskit_core::{
    error::BoxError,
    event::{EventType, ExpectedVersion, NewEvent, RawEvent, StreamName},
    store::{
        AppendOptions, CheckpointStore, ClaimStore, ClaimedItem, EventStore, GlobalReader,
        NewWorkItem, WorkState,
    },
};
use eskit_processor::{
    RunError, Runner, Shutdown, Subscription, SubscriptionOptions, TodoOptions, TodoProcessor,
};
use eskit_sqlite::SqliteStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn is_send<T: Send>(_: &T) {}

#[test]
fn the_runner_s_futures_are_send() {
    let runner = Runner::new();
    is_send(&runner.run(std::future::pending()));
    is_send(&Runner::new().run_until_signal());
}

#[tokio::test]
async fn the_first_failure_stops_every_service_and_is_returned() -> TestResult {
    let asked = Arc::new(AtomicBool::new(false));
    let a = Arc::clone(&asked);
    let err = Runner::new()
        .with_service("good", move |shutdown: Shutdown| async move {
            shutdown.wait().await;
            a.store(true, Ordering::SeqCst);
            Ok::<_, BoxError>(())
        })
        .with_service("bad", |_| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), BoxError>("the database is gone".into())
        })
        .run(std::future::pending())
        .await
        .err()
        .ok_or("the runner returned Ok")?;
    match err {
        RunError::Service { name, source } => {
            assert_eq!(name, "bad");
            assert_eq!(source.to_string(), "the database is gone");
        }
        other => return Err(format!("unexpected error {other:?}").into()),
    }
    assert!(
        asked.load(Ordering::SeqCst),
        "the good service was not asked to stop"
    );
    Ok(())
}

#[tokio::test]
async fn a_panicking_service_is_reported_by_name() -> TestResult {
    let err = Runner::new()
        .with_service("waits", |s: Shutdown| async move {
            s.wait().await;
            Ok::<_, BoxError>(())
        })
        .with_service("panics", |_| async {
            #[allow(clippy::panic)]
            if true {
                panic!("bug");
            }
            Ok::<_, BoxError>(())
        })
        .run(std::future::pending())
        .await
        .err()
        .ok_or("the runner returned Ok")?;
    assert!(
        matches!(err, RunError::Panicked { ref name } if name == "panics"),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn services_that_ignore_shutdown_are_aborted_at_the_deadline() -> TestResult {
    let err = Runner::new()
        .with_deadline(Duration::from_millis(50))
        .with_service("polite", |s: Shutdown| async move {
            s.wait().await;
            Ok::<_, BoxError>(())
        })
        .with_service("stubborn", |_| async {
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(())
        })
        .run(async {})
        .await
        .err()
        .ok_or("the runner returned Ok")?;
    match err {
        RunError::DeadlinePassed { pending } => assert_eq!(pending, ["stubborn"]),
        other => return Err(format!("unexpected error {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn services_that_end_on_their_own_end_the_run_and_names_are_unique() -> TestResult {
    Runner::new()
        .with_service("one-off", |_| async { Ok::<_, BoxError>(()) })
        .with_service("another", |_| async { Ok::<_, BoxError>(()) })
        .run(std::future::pending())
        .await?;
    let err = Runner::new()
        .with_service("x", |_| async { Ok::<_, BoxError>(()) })
        .with_service("x", |_| async { Ok::<_, BoxError>(()) })
        .run(std::future::pending())
        .await
        .err()
        .ok_or("two services with one name ran")?;
    assert!(matches!(err, RunError::InvalidService { ref name, .. } if name == "x"));
    Ok(())
}

const CHILD_DIR: &str = "ESKIT_RUNNER_CHILD_DIR";

/// The child's side of the SIGTERM test; does nothing in a normal run.
#[test]
fn sigterm_child() -> TestResult {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return Ok(());
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = SqliteStore::open(dir.join("events.db"))?;
        let sub = Subscription::new(
            store.clone(),
            store.checkpoints(),
            SubscriptionOptions::new("runner-sub")?
                .with_checkpoint_every(1_000_000)?
                .with_checkpoint_interval(Duration::from_secs(3600)),
            |_: &[RawEvent]| Ok(()),
        );
        let todo = TodoProcessor::new(
            store.claims(),
            TodoOptions::new("slow", "child")?.with_poll_interval(Duration::from_millis(5))?,
            |_item: ClaimedItem, _ctx| async {
                #[allow(clippy::print_stdout)]
                {
                    println!("working");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(())
            },
        );
        Runner::new()
            .with_deadline(Duration::from_secs(20))
            .with_service("subscription", move |s: Shutdown| sub.run(s.wait()))
            .with_service("todo", move |s: Shutdown| todo.run(s.wait()))
            .run_until_signal()
            .await?;
        store.close().await;
        Ok(())
    })
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn seed(dir: &Path) -> Result<SqliteStore, Box<dyn std::error::Error>> {
    let store = SqliteStore::open(dir.join("events.db"))?;
    eskit_core::rt::block_on(async {
        let s = StreamName::new("t", "1")?;
        let events = (0..20)
            .map(|i| EventType::new("E").map(|t| NewEvent::new(t, vec![i])))
            .collect::<Result<Vec<_>, _>>()?;
        store
            .append(&s, ExpectedVersion::Any, events, AppendOptions::new())
            .await?;
        store
            .claims()
            .enqueue("slow", vec![NewWorkItem::new("only", vec![])])
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(store)
}

#[test]
fn sigterm_shuts_down_gracefully_finishing_the_work_in_hand() -> TestResult {
    if std::env::var_os(CHILD_DIR).is_some() {
        return Ok(());
    }
    let dir = TempDir(std::env::temp_dir().join(format!("eskit-runner-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let store = seed(&dir.0)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "sigterm_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    // A child that hangs must not hang the test: a watchdog kills it after
    // a generous bound, and the test then fails on its exit status.
    let pid = child.id().to_string();
    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    std::thread::spawn(move || {
        for _ in 0..1200 {
            if done.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    });
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    // The handler prints when it starts on the item: terminate then.
    loop {
        let line = lines.next().ok_or("the child ended before working")??;
        // libtest prints the test's name on the same line first.
        if line.trim_end().ends_with("working") {
            break;
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(killed.success(), "kill -TERM failed");
    for _ in lines {}
    let status = child.wait()?;
    finished.store(true, Ordering::SeqCst);
    assert!(status.success(), "the child exited with {status}");
    eskit_core::rt::block_on(async {
        let item = store.claims().get(1).await?.ok_or("item gone")?;
        assert_eq!(item.state, WorkState::Done, "the item in hand was finished");
        let head = store.head().await?;
        let saved = store.checkpoints().load("runner-sub").await?;
        assert_eq!(saved, Some(head), "the subscription saved its checkpoint");
        store.close().await;
        Ok(())
    })
}
