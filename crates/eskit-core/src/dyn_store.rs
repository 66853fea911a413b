//! Object-safe twins of the store traits, for backends chosen at run time
//! (the CLI, configuration-driven services).
//!
//! Every [`EventStore`] is a [`DynEventStore`] through a blanket impl, and
//! `Arc<dyn DynEventStore>` is an [`EventStore`] again, so generic code takes
//! either.
//!
//! ```
//! use std::sync::Arc;
//! use eskit_core::{DynEventStore, EventStore, MemoryStore, StreamName};
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output { eskit_core::block_on(f) }
//! let store: Arc<dyn DynEventStore> = Arc::new(MemoryStore::new());
//! let version = block_on(store.stream_version(&StreamName::new("t", "1")?))?;
//! assert_eq!(version.get(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::dcb::{EventQueryReader, QueryOptions};
use crate::error::StoreError;
use crate::event::{AppendResult, NewEvent, RawEvent};
use crate::name::StreamName;
use crate::store::{
    AppendOptions, CheckpointStore, EventStore, GlobalBatch, GlobalReader, LoadOptions, LockGuard,
    LockRegistry, ReadOptions, Snapshot, SnapshotStore, StreamLifecycle, StreamStatus,
};
use crate::version::{ExpectedVersion, GlobalCursor, Version};

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe [`EventStore`].
pub trait DynEventStore: Send + Sync {
    /// See [`EventStore::append`].
    fn dyn_append<'a>(
        &'a self,
        stream: &'a StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> BoxFuture<'a, Result<AppendResult, StoreError>>;

    /// See [`EventStore::load`].
    fn dyn_load<'a>(
        &'a self,
        stream: &'a StreamName,
        options: LoadOptions,
    ) -> BoxFuture<'a, Result<Vec<RawEvent>, StoreError>>;

    /// See [`EventStore::stream_version`].
    fn dyn_stream_version<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<Version, StoreError>>;

    /// See [`EventStore::find_idempotent`].
    fn dyn_find_idempotent<'a>(
        &'a self,
        stream: &'a StreamName,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<RawEvent>>, StoreError>>;
}

impl<T: EventStore> DynEventStore for T {
    fn dyn_append<'a>(
        &'a self,
        stream: &'a StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> BoxFuture<'a, Result<AppendResult, StoreError>> {
        Box::pin(self.append(stream, expected, events, options))
    }

    fn dyn_load<'a>(
        &'a self,
        stream: &'a StreamName,
        options: LoadOptions,
    ) -> BoxFuture<'a, Result<Vec<RawEvent>, StoreError>> {
        Box::pin(self.load(stream, options))
    }

    fn dyn_stream_version<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<Version, StoreError>> {
        Box::pin(self.stream_version(stream))
    }

    fn dyn_find_idempotent<'a>(
        &'a self,
        stream: &'a StreamName,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<RawEvent>>, StoreError>> {
        Box::pin(self.find_idempotent(stream, key))
    }
}

impl EventStore for Arc<dyn DynEventStore> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        options: AppendOptions,
    ) -> Result<AppendResult, StoreError> {
        (**self).dyn_append(stream, expected, events, options).await
    }

    async fn load(
        &self,
        stream: &StreamName,
        options: LoadOptions,
    ) -> Result<Vec<RawEvent>, StoreError> {
        (**self).dyn_load(stream, options).await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Version, StoreError> {
        (**self).dyn_stream_version(stream).await
    }

    async fn find_idempotent(
        &self,
        stream: &StreamName,
        key: &str,
    ) -> Result<Option<Vec<RawEvent>>, StoreError> {
        (**self).dyn_find_idempotent(stream, key).await
    }
}

/// Object-safe [`GlobalReader`].
pub trait DynGlobalReader: Send + Sync {
    /// See [`GlobalReader::read`].
    fn dyn_read(&self, options: ReadOptions) -> BoxFuture<'_, Result<GlobalBatch, StoreError>>;
    /// See [`GlobalReader::head`].
    fn dyn_head(&self) -> BoxFuture<'_, Result<GlobalCursor, StoreError>>;
}

impl<T: GlobalReader> DynGlobalReader for T {
    fn dyn_read(&self, options: ReadOptions) -> BoxFuture<'_, Result<GlobalBatch, StoreError>> {
        Box::pin(self.read(options))
    }
    fn dyn_head(&self) -> BoxFuture<'_, Result<GlobalCursor, StoreError>> {
        Box::pin(self.head())
    }
}

impl GlobalReader for Arc<dyn DynGlobalReader + '_> {
    async fn read(&self, options: ReadOptions) -> Result<GlobalBatch, StoreError> {
        (**self).dyn_read(options).await
    }
    async fn head(&self) -> Result<GlobalCursor, StoreError> {
        (**self).dyn_head().await
    }
}

/// Object-safe [`EventQueryReader`].
pub trait DynEventQueryReader: Send + Sync {
    /// See [`EventQueryReader::query`].
    fn dyn_query(&self, options: QueryOptions) -> BoxFuture<'_, Result<GlobalBatch, StoreError>>;
}

impl<T: EventQueryReader> DynEventQueryReader for T {
    fn dyn_query(&self, options: QueryOptions) -> BoxFuture<'_, Result<GlobalBatch, StoreError>> {
        Box::pin(self.query(options))
    }
}

impl EventQueryReader for Arc<dyn DynEventQueryReader + '_> {
    async fn query(&self, options: QueryOptions) -> Result<GlobalBatch, StoreError> {
        (**self).dyn_query(options).await
    }
}

/// Object-safe [`StreamLifecycle`].
pub trait DynStreamLifecycle: Send + Sync {
    /// See [`StreamLifecycle::tombstone`].
    fn dyn_tombstone<'a>(
        &'a self,
        stream: &'a StreamName,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// See [`StreamLifecycle::archive`].
    fn dyn_archive<'a>(
        &'a self,
        stream: &'a StreamName,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// See [`StreamLifecycle::restore`].
    fn dyn_restore<'a>(&'a self, stream: &'a StreamName) -> BoxFuture<'a, Result<(), StoreError>>;
    /// See [`StreamLifecycle::delete`].
    fn dyn_delete<'a>(&'a self, stream: &'a StreamName) -> BoxFuture<'a, Result<(), StoreError>>;
    /// See [`StreamLifecycle::status`].
    fn dyn_status<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<StreamStatus, StoreError>>;
}

impl<T: StreamLifecycle> DynStreamLifecycle for T {
    fn dyn_tombstone<'a>(
        &'a self,
        stream: &'a StreamName,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.tombstone(stream, reason))
    }
    fn dyn_archive<'a>(
        &'a self,
        stream: &'a StreamName,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.archive(stream, reason))
    }
    fn dyn_restore<'a>(&'a self, stream: &'a StreamName) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.restore(stream))
    }
    fn dyn_delete<'a>(&'a self, stream: &'a StreamName) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.delete(stream))
    }
    fn dyn_status<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<StreamStatus, StoreError>> {
        Box::pin(self.status(stream))
    }
}

impl StreamLifecycle for Arc<dyn DynStreamLifecycle> {
    async fn tombstone(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        (**self).dyn_tombstone(stream, reason).await
    }
    async fn archive(&self, stream: &StreamName, reason: &str) -> Result<(), StoreError> {
        (**self).dyn_archive(stream, reason).await
    }
    async fn restore(&self, stream: &StreamName) -> Result<(), StoreError> {
        (**self).dyn_restore(stream).await
    }
    async fn delete(&self, stream: &StreamName) -> Result<(), StoreError> {
        (**self).dyn_delete(stream).await
    }
    async fn status(&self, stream: &StreamName) -> Result<StreamStatus, StoreError> {
        (**self).dyn_status(stream).await
    }
}

/// Object-safe [`SnapshotStore`].
pub trait DynSnapshotStore: Send + Sync {
    /// See [`SnapshotStore::save`].
    fn dyn_save(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>>;
    /// See [`SnapshotStore::load`].
    fn dyn_load<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>>;
    /// See [`SnapshotStore::invalidate`].
    fn dyn_invalidate<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// See [`SnapshotStore::invalidate_all`].
    fn dyn_invalidate_all(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl<T: SnapshotStore> DynSnapshotStore for T {
    fn dyn_save(&self, snapshot: Snapshot) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.save(snapshot))
    }
    fn dyn_load<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<Option<Snapshot>, StoreError>> {
        Box::pin(SnapshotStore::load(self, stream))
    }
    fn dyn_invalidate<'a>(
        &'a self,
        stream: &'a StreamName,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.invalidate(stream))
    }
    fn dyn_invalidate_all(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.invalidate_all())
    }
}

/// Object-safe [`CheckpointStore`].
pub trait DynCheckpointStore: Send + Sync {
    /// See [`CheckpointStore::load`].
    fn dyn_load<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<GlobalCursor>, StoreError>>;
    /// See [`CheckpointStore::save`].
    fn dyn_save<'a>(
        &'a self,
        name: &'a str,
        cursor: GlobalCursor,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<T: CheckpointStore> DynCheckpointStore for T {
    fn dyn_load<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<GlobalCursor>, StoreError>> {
        Box::pin(CheckpointStore::load(self, name))
    }
    fn dyn_save<'a>(
        &'a self,
        name: &'a str,
        cursor: GlobalCursor,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(CheckpointStore::save(self, name, cursor))
    }
}

/// Object-safe [`LockRegistry`].
pub trait DynLockRegistry: Send + Sync {
    /// See [`LockRegistry::acquire`].
    fn dyn_acquire<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<LockGuard, StoreError>>;
    /// See [`LockRegistry::try_acquire`].
    fn dyn_try_acquire<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<LockGuard>, StoreError>>;
}

impl<T: LockRegistry> DynLockRegistry for T {
    fn dyn_acquire<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<LockGuard, StoreError>> {
        Box::pin(self.acquire(key))
    }
    fn dyn_try_acquire<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<LockGuard>, StoreError>> {
        Box::pin(self.try_acquire(key))
    }
}

impl SnapshotStore for Arc<dyn DynSnapshotStore> {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        (**self).dyn_save(snapshot).await
    }
    async fn load(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        (**self).dyn_load(stream).await
    }
    async fn invalidate(&self, stream: &StreamName) -> Result<(), StoreError> {
        (**self).dyn_invalidate(stream).await
    }
    async fn invalidate_all(&self) -> Result<(), StoreError> {
        (**self).dyn_invalidate_all().await
    }
}

impl CheckpointStore for Arc<dyn DynCheckpointStore> {
    async fn load(&self, name: &str) -> Result<Option<GlobalCursor>, StoreError> {
        (**self).dyn_load(name).await
    }
    async fn save(&self, name: &str, cursor: GlobalCursor) -> Result<(), StoreError> {
        (**self).dyn_save(name, cursor).await
    }
}

impl LockRegistry for Arc<dyn DynLockRegistry> {
    async fn acquire(&self, key: &str) -> Result<LockGuard, StoreError> {
        (**self).dyn_acquire(key).await
    }
    async fn try_acquire(&self, key: &str) -> Result<Option<LockGuard>, StoreError> {
        (**self).dyn_try_acquire(key).await
    }
}
