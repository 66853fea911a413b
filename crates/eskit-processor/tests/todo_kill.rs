//! Todo processors in several processes on one SQLite file, with SIGKILL:
//! two child processes work through one queue; one is killed with SIGKILL
//! again and again (a replacement is started each time). Every item ends
//! done; an item is handled twice only when a killed process had it in hand
//! (its lease ran out and another worker took it), so the extra handlings
//! are bounded by what the killed processes held.
//!
//! Each child appends `<pid> <key> <attempt>` to a shared log when its
//! handler starts on an item. The child is this same binary with
//! `ESKIT_TODO_CHILD_DIR` set. `ESKIT_TODO_KILLS` sets the number of kills
//! (default 3).

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use eskit_core::store::{ClaimStore, ClaimedItem, NewWorkItem, WorkState};
use eskit_processor::{TodoOptions, TodoProcessor};
use eskit_sqlite::SqliteStore;

const ITEMS: u64 = 300;
const WORKERS: usize = 2;
const BATCH: usize = 3;
const LEASE: Duration = Duration::from_millis(500);
const WAIT_BOUND: Duration = Duration::from_secs(120);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let outcome = match std::env::var_os("ESKIT_TODO_CHILD_DIR") {
        Some(dir) => child(Path::new(&dir)),
        None => parent(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("todo_kill: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Works through the queue until killed.
fn child(dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store =
            SqliteStore::connect(eskit_sqlite::SqliteOptions::file(dir.join("events.db"))).await?;
        let log = std::sync::Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("handled.log"))?,
        );
        let pid = std::process::id();
        let options = TodoOptions::new("jobs", format!("child-{pid}"))?
            .with_workers(WORKERS)?
            .with_batch_size(BATCH)?
            .with_lease(LEASE)?
            .with_poll_interval(Duration::from_millis(5))?;
        let processor =
            TodoProcessor::new(store.claims(), options, move |item: ClaimedItem, _ctx| {
                let log = std::sync::Arc::clone(&log);
                async move {
                    (&*log)
                        .write_all(format!("{pid} {} {}\n", item.key, item.attempt).as_bytes())?;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok(())
                }
            });
        processor.run(std::future::pending()).await?;
        Ok(())
    })
}

fn spawn_child(dir: &Path) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env("ESKIT_TODO_CHILD_DIR", dir)
        .stdin(Stdio::null())
        .spawn()?)
}

/// `(pid, key)` of every complete log line so far.
fn read_log(dir: &Path) -> Result<Vec<(u32, String)>> {
    let text = match std::fs::read_to_string(dir.join("handled.log")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let pid = parts.next().ok_or("empty log line")?.parse()?;
            let key = parts.next().ok_or("log line without a key")?.to_owned();
            Ok((pid, key))
        })
        .collect()
}

fn parent() -> Result<()> {
    let kills: usize = std::env::var("ESKIT_TODO_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir =
        std::env::temp_dir().join(format!("eskit-processor-todo-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut children: Vec<Child> = Vec::new();
    let result = run_parent(&dir, kills, &mut children);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run_parent(dir: &Path, kills: usize, children: &mut Vec<Child>) -> Result<()> {
    let store = SqliteStore::open(dir.join("events.db"))?;
    let claims = store.claims();
    let items = (0..ITEMS)
        .map(|i| NewWorkItem::new(format!("job-{i}"), vec![]))
        .collect();
    let ids: Vec<u64> = eskit_core::rt::block_on(claims.enqueue("jobs", items))?
        .into_iter()
        .map(|e| e.id())
        .collect();
    children.push(spawn_child(dir)?);
    children.push(spawn_child(dir)?);
    let start = Instant::now();
    let mut killed: HashSet<u32> = HashSet::new();
    for round in 0..kills {
        // Kill once the log has grown by a share of the items.
        let target = (round + 1) * (ITEMS as usize) / (kills + 2);
        while read_log(dir)?.len() < target {
            if start.elapsed() > WAIT_BOUND {
                return Err(format!("round {round}: the log did not reach {target} lines").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut victim = children.remove(0);
        killed.insert(victim.id());
        let k = victim.kill(); // SIGKILL
        victim.wait()?;
        k?;
        children.push(spawn_child(dir)?);
    }
    // Wait until every item is done.
    loop {
        let states = eskit_core::rt::block_on(async {
            let mut done = 0;
            for id in &ids {
                if let Some(item) = claims.get(*id).await? {
                    if item.state == WorkState::Done {
                        done += 1;
                    } else if item.state == WorkState::Dead {
                        return Err(
                            format!("item {} went dead: {:?}", item.key, item.last_error).into(),
                        );
                    }
                }
            }
            Ok::<_, Box<dyn std::error::Error>>(done)
        })?;
        if states == ids.len() {
            break;
        }
        if start.elapsed() > WAIT_BOUND {
            return Err(format!("only {states} of {} items done", ids.len()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = read_log(dir)?;
    let mut by_key: HashMap<&str, Vec<u32>> = HashMap::new();
    for (pid, key) in &log {
        by_key.entry(key.as_str()).or_default().push(*pid);
    }
    let lost = (0..ITEMS)
        .filter(|i| !by_key.contains_key(format!("job-{i}").as_str()))
        .count();
    // A second handling is allowed only after a killed process had the item.
    let mut again = 0;
    for (key, pids) in &by_key {
        for (i, _) in pids.iter().enumerate().skip(1) {
            if !pids[..i].iter().any(|p| killed.contains(p)) {
                return Err(format!("{key} was handled twice without a kill: {pids:?}").into());
            }
            again += 1;
        }
    }
    let bound = kills * WORKERS * BATCH;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "todo_kill: {kills} kills, {ITEMS} items, {} handlings, {lost} lost, {again} again \
             (at most {bound}: what the killed processes held), in {:.1?}",
            log.len(),
            start.elapsed()
        );
    }
    if lost > 0 || again > bound {
        return Err("items were lost or handled again beyond what the kills explain".into());
    }
    eskit_core::rt::block_on(store.close());
    #[allow(clippy::print_stdout)]
    {
        println!("todo_kill: 1 passed, 0 failed");
    }
    Ok(())
}
