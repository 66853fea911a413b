//! Snapshots in the store's database.

use eskit_core::{
    error::StoreError,
    event::{StreamName, Timestamp, Version},
    store::{Snapshot, SnapshotStore},
};
use rusqlite::OptionalExtension;

use crate::error::{corrupt, store_error};
use crate::row::Checksum;
use crate::store::SqliteStore;

/// One snapshot per stream, in the `eskit_snapshots` table of the store's
/// database, with a checksum verified on load. Deleting a stream removes its
/// snapshot in the same transaction. Get one with
/// [`SqliteStore::snapshots`].
#[derive(Debug, Clone)]
pub struct SqliteSnapshotStore {
    store: SqliteStore,
}

fn checksum(
    stream: &StreamName,
    version: i64,
    schema_version: i64,
    codec: &str,
    state: &[u8],
    created_at: i64,
) -> i64 {
    let mut scratch = crate::row::checksum_scratch(state.len());
    let mut c = Checksum::new(&mut scratch);
    c.bytes(stream.stream_type().as_str().as_bytes())
        .bytes(stream.stream_id().as_str().as_bytes())
        .int(version)
        .int(schema_version)
        .bytes(codec.as_bytes())
        .int(created_at);
    c.finish(state)
}

impl SqliteSnapshotStore {
    pub(crate) fn new(store: SqliteStore) -> Self {
        Self { store }
    }
}

impl SnapshotStore for SqliteSnapshotStore {
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        snapshot.validate()?;
        let version = i64::try_from(snapshot.version.get())
            .map_err(|_| StoreError::backend(crate::SqliteError::OutOfRange { what: "version" }))?;
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                let s = &snapshot;
                // A snapshot belongs to its stream's tenant: refused for a
                // stream (or a snapshot) another tenant owns.
                let owner: Option<String> = tx
                    .prepare_cached(
                        "SELECT tenant FROM eskit_streams WHERE stream_type = ?1 AND stream_id = ?2 \
                         UNION ALL SELECT tenant FROM eskit_snapshots \
                         WHERE stream_type = ?1 AND stream_id = ?2 AND tenant <> ?3 LIMIT 1",
                    )
                    .and_then(|mut st| {
                        st.query_row(
                            (
                                s.stream.stream_type().as_str(),
                                s.stream.stream_id().as_str(),
                                tenant.as_str(),
                            ),
                            |r| r.get(0),
                        )
                        .optional()
                    })
                    .map_err(store_error)?;
                if owner.is_some_and(|o| o != tenant) {
                    return Err(StoreError::WrongTenant {
                        stream: s.stream.clone(),
                    });
                }
                let schema_version = i64::from(s.schema_version);
                let created = s.created_at.as_unix_micros();
                let sum = checksum(
                    &s.stream,
                    version,
                    schema_version,
                    &s.codec,
                    &s.state,
                    created,
                );
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO eskit_snapshots (stream_type, stream_id, version, \
                     schema_version, codec, state, created_at, checksum, tenant) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .and_then(|mut st| {
                    st.execute(rusqlite::params![
                        s.stream.stream_type().as_str(),
                        s.stream.stream_id().as_str(),
                        version,
                        schema_version,
                        s.codec,
                        s.state,
                        created,
                        sum,
                        tenant,
                    ])
                })
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn load(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        let stream = stream.clone();
        let tenant = self.store.tenant_key();
        self.store
            .workers()
            .read(move |c| {
                type Row = (i64, i64, String, Vec<u8>, i64, i64);
                let row: Option<Row> = c
                    .prepare_cached(
                        "SELECT version, schema_version, codec, state, created_at, checksum \
                         FROM eskit_snapshots \
                         WHERE stream_type = ?1 AND stream_id = ?2 AND tenant = ?3",
                    )
                    .and_then(|mut s| {
                        s.query_row(
                            (
                                stream.stream_type().as_str(),
                                stream.stream_id().as_str(),
                                tenant.as_str(),
                            ),
                            |r| {
                                Ok((
                                    r.get(0)?,
                                    r.get(1)?,
                                    r.get(2)?,
                                    r.get(3)?,
                                    r.get(4)?,
                                    r.get(5)?,
                                ))
                            },
                        )
                        .optional()
                    })
                    .map_err(store_error)?;
                let Some((version, schema_version, codec, state, created, sum)) = row else {
                    return Ok(None);
                };
                if sum != checksum(&stream, version, schema_version, &codec, &state, created) {
                    return Err(corrupt(format!(
                        "checksum mismatch in the snapshot of {stream}"
                    )));
                }
                let bad = || corrupt(format!("invalid snapshot of {stream}"));
                Ok(Some(Snapshot {
                    version: Version::new(u64::try_from(version).map_err(|_| bad())?),
                    schema_version: u32::try_from(schema_version).map_err(|_| bad())?,
                    codec,
                    state,
                    created_at: Timestamp::from_unix_micros(created),
                    stream,
                }))
            })
            .await
    }

    async fn invalidate(&self, stream: &StreamName) -> Result<(), StoreError> {
        let stream = stream.clone();
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                tx.prepare_cached(
                    "DELETE FROM eskit_snapshots \
                     WHERE stream_type = ?1 AND stream_id = ?2 AND tenant = ?3",
                )
                .and_then(|mut s| {
                    s.execute((
                        stream.stream_type().as_str(),
                        stream.stream_id().as_str(),
                        tenant.as_str(),
                    ))
                })
                .map_err(store_error)?;
                Ok(())
            })
            .await
    }

    async fn invalidate_all(&self) -> Result<(), StoreError> {
        let tenant = self.store.tenant_key();
        self.store
            .write_tx(move |tx| {
                tx.execute("DELETE FROM eskit_snapshots WHERE tenant = ?1", [tenant])
                    .map_err(store_error)?;
                Ok(())
            })
            .await
    }
}
