//! WAL checkpoints off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that takes the log
//! past 1,000 frames: that commit copies the logged pages into the database
//! and syncs both files before its caller hears back, and the appends queued
//! behind it wait as long. Here the writer's commit only asks a checkpoint
//! thread, with its own connection, to run the same passive checkpoint
//! (same threshold, same syncs) while the writer goes on committing.
//!
//! **Invariant**: the durability is SQLite's own. Each checkpoint syncs the
//! log before it copies it, as the automatic one does, and starts as soon
//! as the log passes [`BACKGROUND_CHECKPOINT_FRAMES`]; if the thread falls
//! behind and the log reaches [`INLINE_CHECKPOINT_FRAMES`], the writer's
//! commit checkpoints itself, as without this module, which also lets the
//! log start over from its beginning (a passive checkpoint racing a busy
//! writer never catches up with the log's end). With `synchronous =
//! NORMAL` a power loss may still take the commits since the last
//! checkpoint, and only those; what changes is how many that can be: while
//! a checkpoint runs behind a busy writer, the log may grow past
//! [`BACKGROUND_CHECKPOINT_FRAMES`] unsynced frames, up to
//! [`INLINE_CHECKPOINT_FRAMES`], where SQLite's automatic checkpoint would
//! have synced every commit after the first 1,000 frames.

use std::cell::RefCell;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use rusqlite::Connection;
use rusqlite::hooks::Wal;

/// Log frames past which a commit asks for a checkpoint: SQLite's default
/// automatic checkpoint threshold.
pub const BACKGROUND_CHECKPOINT_FRAMES: i32 = 1_000;

/// Log frames past which the writer's commit checkpoints by itself.
pub const INLINE_CHECKPOINT_FRAMES: i32 = 4 * BACKGROUND_CHECKPOINT_FRAMES;

/// The writer's handle on the checkpoint thread; dropping it (when the
/// writer thread ends) stops the thread once its checkpoint is done.
pub(crate) struct Checkpointer {
    /// A request is queued and not yet taken: further commits need not
    /// queue another.
    requested: Arc<AtomicBool>,
    tx: Mutex<mpsc::Sender<()>>,
    /// Held while the thread checkpoints: the writer's own checkpoint
    /// waits for it instead of failing busy, so the log stays bounded.
    running: Arc<Mutex<()>>,
}

impl Checkpointer {
    /// Starts the checkpoint thread on `conn`; `on_exit` runs once the
    /// thread has closed the connection.
    pub(crate) fn start(
        conn: Connection,
        on_exit: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<()>();
        let requested = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&requested);
        let running = Arc::new(Mutex::new(()));
        let held = Arc::clone(&running);
        std::thread::Builder::new()
            .name("eskit-sqlite-checkpoint".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    flag.store(false, Ordering::Release);
                    let _running = held.lock().unwrap_or_else(PoisonError::into_inner);
                    // A failure (busy with the writer's own checkpoint, an
                    // I/O error) leaves the log to the next request or to
                    // the writer, as SQLite's automatic checkpoint does.
                    let _ = conn
                        .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
                        .and_then(|mut s| s.query_row([], |_| Ok(())));
                }
                // Closing may run SQLite's final checkpoint when this is the
                // last connection to the file.
                drop(conn);
                on_exit();
            })?;
        Ok(Self {
            requested,
            tx: Mutex::new(tx),
            running,
        })
    }

    fn request(&self) {
        if !self.requested.swap(true, Ordering::AcqRel) {
            // Only fails once the thread is gone (the store is closing).
            let _ = self
                .tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(());
        }
    }
}

thread_local! {
    /// The checkpointer of the writer connection owned by this thread.
    static CHECKPOINTER: RefCell<Option<Checkpointer>> = const { RefCell::new(None) };
}

/// Makes `conn`'s commits on this thread hand their checkpoints to
/// `checkpointer` (this replaces SQLite's automatic checkpoint). Call it on
/// the thread that owns `conn`, which must be the only connection this
/// thread commits on.
pub(crate) fn attach(conn: &Connection, checkpointer: Checkpointer) {
    CHECKPOINTER.with(|c| *c.borrow_mut() = Some(checkpointer));
    conn.wal_hook(Some(after_commit));
}

/// Stops this thread's checkpointer (when its writer connection closes).
pub(crate) fn detach() {
    CHECKPOINTER.with(|c| c.borrow_mut().take());
}

/// Replaces SQLite's automatic checkpoint on `conn` with this module's
/// hook, for a writer connection that moves between threads: each thread
/// that commits on it is lent the checkpointer with [`lend`] meanwhile.
pub(crate) fn hook(conn: &Connection) {
    conn.wal_hook(Some(after_commit));
}

/// Makes `checkpointer` this thread's, returning the one it had. A commit
/// on a thread without one checkpoints only at [`INLINE_CHECKPOINT_FRAMES`],
/// by itself.
pub(crate) fn lend(checkpointer: Option<Checkpointer>) -> Option<Checkpointer> {
    CHECKPOINTER.with(|c| std::mem::replace(&mut *c.borrow_mut(), checkpointer))
}

/// SQLite's hook after every commit, with the frames now in the log.
fn after_commit(wal: &Wal, frames: c_int) -> rusqlite::Result<()> {
    if frames >= INLINE_CHECKPOINT_FRAMES {
        // What the automatic checkpoint does, and its failure is ignored
        // the same way: the commit itself has succeeded. A checkpoint the
        // thread is running is waited for first (it would make this one
        // fail busy and the log grow on): no commit can come in between,
        // so this one reaches the log's end and the log starts over.
        CHECKPOINTER.with(|c| match c.borrow().as_ref() {
            Some(c) => {
                let _running = c.running.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = wal.checkpoint();
            }
            None => {
                let _ = wal.checkpoint();
            }
        });
    } else if frames >= BACKGROUND_CHECKPOINT_FRAMES {
        CHECKPOINTER.with(|c| {
            if let Some(c) = c.borrow().as_ref() {
                c.request();
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteOptions, SqliteStore};
    use eskit_core::{
        error::BoxError,
        event::{EventType, ExpectedVersion, NewEvent, StreamName},
        rt::block_on,
        store::{AppendOptions, EventStore},
    };

    /// With SQLite's automatic checkpoint replaced, checkpoints must still
    /// happen: appends writing about three times [`INLINE_CHECKPOINT_FRAMES`]
    /// frames leave a log that never grew past twice that bound.
    #[test]
    fn the_log_stays_bounded_under_steady_appends() -> Result<(), BoxError> {
        let dir = std::env::temp_dir().join(format!(
            "eskit-sqlite-wal-{}-{}",
            std::process::id(),
            eskit_core::event::Timestamp::now().as_unix_micros()
        ));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("events.db");
        let store = SqliteStore::open_with(SqliteOptions::file(&path))?;
        let ty = EventType::new("Filled")?;
        // One 3 KiB event per commit: at least one frame per commit, plus
        // the index and stream pages.
        let payload = format!("\"{}\"", "x".repeat(3_000)).into_bytes();
        let commits = INLINE_CHECKPOINT_FRAMES;
        for i in 0..commits {
            let s = StreamName::new("fill", format!("s-{}", i % 50))?;
            let e = NewEvent::new(ty.clone(), payload.clone());
            block_on(store.append(&s, ExpectedVersion::Any, vec![e], AppendOptions::new()))?;
        }
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(&wal)?.len();
        let page: i64 =
            rusqlite::Connection::open(&path)?.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let page = u64::try_from(page)?;
        block_on(store.close());
        let _ = std::fs::remove_dir_all(&dir);
        let bound = 2 * u64::try_from(INLINE_CHECKPOINT_FRAMES)? * (page + 24);
        assert!(
            wal_bytes <= bound,
            "the log holds {wal_bytes} bytes after {commits} commits, over {bound}"
        );
        Ok(())
    }
}
