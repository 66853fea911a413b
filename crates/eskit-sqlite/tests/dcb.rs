//! Tags and DCB on SQLite: how tags are stored, checked and cleaned up.

mod common;

use common::{TempDir, TestResult, event, stream};
use eskit_core::{
    dcb::{EventQuery, EventQueryReader, QueryItem, QueryOptions},
    error::StoreError,
    event::{ExpectedVersion, Tag},
    rt::block_on,
    store::{AppendOptions, EventStore, GlobalReader, LoadOptions, ReadOptions, StreamLifecycle},
};
use eskit_sqlite::SqliteStore;

fn tags(list: &[&str]) -> Result<Vec<Tag>, StoreError> {
    list.iter()
        .map(|t| Tag::new(t).map_err(StoreError::from))
        .collect()
}

fn count(path: &std::path::Path, sql: &str) -> Result<i64, rusqlite::Error> {
    rusqlite::Connection::open(path)?.query_row(sql, [], |r| r.get(0))
}

#[test]
fn a_damaged_tag_is_reported_not_returned() -> TestResult {
    let dir = TempDir::new("dcb-damaged")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let a = stream("enrolment", "a-1")?;
    let events = vec![
        event("Enrolled", "1")?.with_tags(tags(&["course:c-1", "student:s-1"])?),
        event("Enrolled", "2")?.with_tags(tags(&["course:c-2"])?),
        event("Enrolled", "3")?.with_tags(tags(&["course:c-3"])?),
    ];
    block_on(s.append(&a, ExpectedVersion::Any, events, AppendOptions::new()))?;
    let damages = [
        // A tag removed.
        (
            1,
            "UPDATE eskit_events SET tags = CAST('course:c-1' AS BLOB) WHERE version = 1",
        ),
        // Another tag of the same length.
        (
            2,
            "UPDATE eskit_events SET tags = CAST('course:c-9' AS BLOB) WHERE version = 2",
        ),
        // Tags cleared.
        (3, "UPDATE eskit_events SET tags = NULL WHERE version = 3"),
    ];
    for (version, sql) in damages {
        let c = rusqlite::Connection::open(&path)?;
        c.execute(sql, [])?;
        let from = eskit_core::event::Version::new(version);
        let options = LoadOptions::new().with_from(from).with_to(from);
        let e = block_on(s.load(&a, options)).err();
        assert!(
            matches!(e, Some(StoreError::Corrupt { .. })),
            "event {version}: {e:?}"
        );
    }
    let e = block_on(s.read(ReadOptions::from_start(10))).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    Ok(())
}

#[test]
fn a_hard_delete_removes_the_tag_index_rows() -> TestResult {
    let dir = TempDir::new("dcb-delete")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let a = stream("enrolment", "a-1")?;
    let b = stream("enrolment", "b-1")?;
    let tagged = |p: &str, t: &[&str]| -> Result<_, Box<dyn std::error::Error>> {
        Ok(event("Enrolled", p)?.with_tags(tags(t)?))
    };
    block_on(s.append(
        &a,
        ExpectedVersion::Any,
        vec![
            tagged("1", &["x", "y"])?,
            tagged("2", &["x"])?,
            event("Plain", "3")?,
        ],
        AppendOptions::new(),
    ))?;
    block_on(s.append(
        &b,
        ExpectedVersion::Any,
        vec![tagged("4", &["x"])?],
        AppendOptions::new(),
    ))?;
    assert_eq!(count(&path, "SELECT count(*) FROM eskit_event_tags")?, 4);
    block_on(s.delete(&a))?;
    assert_eq!(count(&path, "SELECT count(*) FROM eskit_event_tags")?, 1);
    assert_eq!(
        count(
            &path,
            "SELECT position FROM eskit_event_tags WHERE tag = 'x'"
        )?,
        4
    );
    Ok(())
}

#[test]
fn a_tag_index_row_naming_the_wrong_event_is_corrupt() -> TestResult {
    let dir = TempDir::new("dcb-index")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let a = stream("enrolment", "a-1")?;
    // Two matching events with the same tags (a read hands them one
    // list), then one that does not match.
    let events = vec![
        event("Enrolled", "1")?.with_tags(tags(&["course:c-1"])?),
        event("Enrolled", "1b")?.with_tags(tags(&["course:c-1"])?),
        event("Enrolled", "2")?.with_tags(tags(&["course:c-2"])?),
    ];
    block_on(s.append(&a, ExpectedVersion::Any, events, AppendOptions::new()))?;
    let query = EventQuery::from(QueryItem::new().with_tags(tags(&["course:c-1"])?));
    let page = block_on(s.query(QueryOptions::from_start(query.clone(), 10)))?;
    assert_eq!(page.events.len(), 2);
    rusqlite::Connection::open(&path)?.execute(
        "INSERT INTO eskit_event_tags (tag, position) VALUES ('course:c-1', 3)",
        [],
    )?;
    let e = block_on(s.query(QueryOptions::from_start(query, 10))).err();
    assert!(matches!(e, Some(StoreError::Corrupt { .. })), "{e:?}");
    Ok(())
}

/// The events of one read that carry the same tag share it: the tag is
/// built once per read, not once per event (an allocation and a free each).
#[test]
fn the_events_of_one_read_share_their_tags() -> TestResult {
    let dir = TempDir::new("dcb-shared-tags")?;
    let s = SqliteStore::open(dir.file("events.db"))?;
    let course = tags(&["course:c-1"])?;
    for i in 0..3 {
        let e = event("Enrolled", &i.to_string())?.with_tags(tags(&["course:c-1", "term:2026"])?);
        block_on(s.append(
            &stream("enrolment", &format!("s-{i}"))?,
            ExpectedVersion::NoStream,
            vec![e],
            AppendOptions::new(),
        ))?;
    }
    let query = EventQuery::from(QueryItem::new().with_tags(course));
    let page = block_on(s.query(QueryOptions::from_start(query, 100)))?;
    let loaded = block_on(GlobalReader::read(&s, ReadOptions::from_start(100)))?;
    for events in [&page.events, &loaded.events] {
        assert_eq!(events.len(), 3);
        for e in events.iter() {
            assert_eq!(e.tags.len(), 2);
            for (tag, first) in e.tags.iter().zip(&events[0].tags) {
                assert_eq!(tag, first);
                assert!(
                    std::ptr::eq(tag.as_str().as_ptr(), first.as_str().as_ptr()),
                    "{tag} is a copy of the read's first one"
                );
            }
        }
    }
    block_on(s.close());
    Ok(())
}

/// A large batch of tagged events is written a few index rows per
/// statement: every tag of every event lands in the index, once, and a
/// query by any of them finds exactly its events in order.
#[test]
fn every_tag_of_a_large_batch_is_indexed() -> TestResult {
    const EVENTS: u64 = 103;
    let dir = TempDir::new("dcb-large-batch")?;
    let path = dir.file("events.db");
    let s = SqliteStore::open(&path)?;
    let a = stream("import", "a-1")?;
    let events = (0..EVENTS)
        .map(|i| {
            let own = format!("k:{}", i % 3);
            Ok(event("Imported", &i.to_string())?.with_tags(tags(&["all", &own])?))
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let r = block_on(s.append(&a, ExpectedVersion::NoStream, events, AppendOptions::new()))?;
    let positions: Vec<u64> = r.records.iter().map(|e| e.position.get()).collect();
    assert_eq!(
        count(&path, "SELECT count(*) FROM eskit_event_tags")?,
        i64::try_from(2 * EVENTS)?
    );
    for (tag, want) in [
        ("all", positions.clone()),
        ("k:0", positions.iter().copied().step_by(3).collect()),
        (
            "k:1",
            positions.iter().copied().skip(1).step_by(3).collect(),
        ),
        (
            "k:2",
            positions.iter().copied().skip(2).step_by(3).collect(),
        ),
    ] {
        let query: EventQuery = QueryItem::new().with_tags(tags(&[tag])?).into();
        let page = block_on(s.query(QueryOptions::from_start(query, 1000)))?;
        let got: Vec<u64> = page.events.iter().map(|e| e.position.get()).collect();
        assert_eq!(got, want, "events tagged {tag}");
    }
    block_on(s.close());
    Ok(())
}
