//! DCB on PostgreSQL: query reads from the tag index, and the locks that
//! make an append condition's check atomic with its write at READ COMMITTED.
//!
//! # Locks
//! Every append takes a *shared* transaction advisory lock per tag its
//! events carry; a conditional append takes an *exclusive* one on one tag
//! of each query item that names tags (an event matching the item carries
//! all of them, so its writer holds the shared lock on that one). All are
//! taken in one statement in sorted order, before the stream's head row,
//! so two appends never wait on each other in a cycle. A condition whose
//! items name no tag (any event of some types, or every event) locks the
//! events table against inserts instead (`SHARE ROW EXCLUSIVE`): rare, and
//! it serializes only those appends. Writers whose tags are disjoint never
//! wait on each other and never get a false conflict.

use eskit_core::dcb::{AppendCondition, EventQuery};
use eskit_core::event::NewEvent;

/// The lock keys of one append: `(namespace, key, exclusive)`, sorted and
/// deduplicated, and whether the condition needs the table lock.
pub(crate) struct LockPlan {
    pub(crate) k1: Vec<i32>,
    pub(crate) k2: Vec<i32>,
    pub(crate) exclusive: Vec<bool>,
    pub(crate) table: bool,
}

/// FNV-1a, 64 bits: a stable hash (the keys must agree across processes
/// and releases, which `std`'s hasher does not promise).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separates parts so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn fold(h: u64) -> i32 {
    // The two halves xor-ed: every bit of the hash counts.
    let folded = (h >> 32) ^ (h & 0xffff_ffff);
    i32::from_ne_bytes((folded as u32).to_ne_bytes())
}

/// The namespace of a schema's tag locks.
pub(crate) fn tag_namespace(schema: &str) -> i32 {
    fold(fnv1a(&[b"eskit-dcb-tag", schema.as_bytes()]))
}

impl LockPlan {
    /// The keys of an append by `tenant` (tenants' tags never share locks).
    pub(crate) fn new(
        ns: i32,
        tenant: &str,
        events: &[NewEvent],
        condition: Option<&AppendCondition>,
    ) -> Self {
        let mut keys: Vec<(i32, bool)> = Vec::new();
        for e in events {
            for t in e.tags() {
                keys.push((
                    fold(fnv1a(&[tenant.as_bytes(), t.as_str().as_bytes()])),
                    false,
                ));
            }
        }
        let mut table = false;
        if let Some(c) = condition {
            for item in c.query().items() {
                match item.tags().first() {
                    Some(t) => keys.push((
                        fold(fnv1a(&[tenant.as_bytes(), t.as_str().as_bytes()])),
                        true,
                    )),
                    None => table = true,
                }
            }
        }
        // Sorted by key, the exclusive entry of a key first, then one per key.
        keys.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        keys.dedup_by_key(|k| k.0);
        Self {
            k1: vec![ns; keys.len()],
            k2: keys.iter().map(|k| k.0).collect(),
            exclusive: keys.iter().map(|k| k.1).collect(),
            table,
        }
    }
}

/// Bind values of a match clause.
pub(crate) struct MatchBinds {
    pub(crate) arrays: Vec<Vec<String>>,
}

/// The SQL condition an event matching `query` satisfies, with its bind
/// parameters numbered from `$first`: per item, its types (none: any) and
/// its tags (`tags @> ...`, served by the GIN index). No item: `false`.
pub(crate) fn match_clause(query: &EventQuery, first: usize) -> (String, MatchBinds) {
    let mut parts = Vec::new();
    let mut arrays = Vec::new();
    let mut n = first;
    for item in query.items() {
        let mut conds = Vec::new();
        if !item.event_types().is_empty() {
            conds.push(format!("e.event_type = ANY(${n}::text[])"));
            arrays.push(
                item.event_types()
                    .iter()
                    .map(|t| t.as_str().to_owned())
                    .collect(),
            );
            n += 1;
        }
        if !item.tags().is_empty() {
            // Only tagged events contain tags: naming the tag index's
            // predicate lets the planner use it.
            conds.push(format!(
                "e.tags @> ${n}::text[] AND {}",
                crate::schema::TAGGED
            ));
            arrays.push(item.tags().iter().map(|t| t.as_str().to_owned()).collect());
            n += 1;
        }
        if conds.is_empty() {
            parts.push("true".to_owned());
        } else {
            parts.push(format!("({})", conds.join(" AND ")));
        }
    }
    let sql = if parts.is_empty() {
        "false".to_owned()
    } else {
        parts.join(" OR ")
    };
    (sql, MatchBinds { arrays })
}

#[cfg(test)]
mod tests {
    use super::*;
    use eskit_core::dcb::QueryItem;
    use eskit_core::event::{EventType, GlobalCursor, Tag};

    #[test]
    fn lock_keys_are_sorted_unique_and_exclusive_wins() -> Result<(), Box<dyn std::error::Error>> {
        let t = |s: &str| Tag::new(s);
        let e = NewEvent::new(EventType::new("E")?, vec![]).with_tags([t("b")?, t("a")?]);
        let q = EventQuery::new()
            .with_item(QueryItem::new().with_tags([t("a")?]))
            .with_item(QueryItem::new().with_event_types([EventType::new("E")?]));
        let c = AppendCondition::new(q, GlobalCursor::START);
        let plan = LockPlan::new(7, "", &[e.clone(), e], Some(&c));
        assert_eq!(plan.k2.len(), 2);
        assert!(plan.k2.windows(2).all(|w| w[0] < w[1]));
        let a = fold(fnv1a(&[b"", b"a"]));
        let i = plan.k2.iter().position(|k| *k == a).ok_or("no key for a")?;
        assert!(plan.exclusive[i]);
        assert_eq!(plan.exclusive.iter().filter(|x| **x).count(), 1);
        assert!(plan.table);
        assert!(plan.k1.iter().all(|k| *k == 7));
        Ok(())
    }

    #[test]
    fn match_clause_numbers_parameters() -> Result<(), Box<dyn std::error::Error>> {
        let q = EventQuery::new()
            .with_item(
                QueryItem::new()
                    .with_event_types([EventType::new("A")?])
                    .with_tags([Tag::new("x")?]),
            )
            .with_item(QueryItem::new());
        let (sql, binds) = match_clause(&q, 4);
        assert_eq!(
            sql,
            "(e.event_type = ANY($4::text[]) AND e.tags @> $5::text[] AND e.tags <> '{}') OR true"
        );
        assert_eq!(binds.arrays.len(), 2);
        assert_eq!(match_clause(&EventQuery::new(), 1).0, "false");
        Ok(())
    }
}
