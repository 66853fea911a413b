//! Where the store's work runs: sqlx needs a Tokio runtime, while the
//! store's futures must complete under any executor. Every operation is
//! spawned onto a runtime and its join handle awaited, which works from
//! anywhere.

use std::future::Future;

use eskit_core::error::StoreError;
use tokio::runtime::Handle;

/// Worker threads of a runtime the store starts for itself.
const OWN_RUNTIME_THREADS: usize = 2;

/// A runtime handle, owning the runtime when the store started it.
pub(crate) struct Runtime {
    handle: Handle,
    _owned: Option<Owned>,
}

/// A runtime the store started; shut down without blocking when the store
/// goes (dropping a runtime from inside async code would panic).
struct Owned(Option<tokio::runtime::Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Runtime {
    /// The given handle, the current runtime, or a new small one.
    pub(crate) fn new(given: Option<Handle>) -> std::io::Result<Self> {
        if let Some(handle) = given.or_else(|| Handle::try_current().ok()) {
            return Ok(Self {
                handle,
                _owned: None,
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(OWN_RUNTIME_THREADS)
            .thread_name("eskit-pg")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: rt.handle().clone(),
            _owned: Some(Owned(Some(rt))),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns `fut` and returns a future of its output that completes under
    /// any executor. The task runs to its end even if that future is dropped.
    pub(crate) fn run<T, F>(
        &self,
        fut: F,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + use<T, F>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let task = self.handle.spawn(fut);
        async move {
            task.await
                .map_err(|e| StoreError::internal(format!("a store task ended early: {e}")))
        }
    }
}
