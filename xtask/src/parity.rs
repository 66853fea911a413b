//! `cargo xtask parity [--check]`: renders STORE_PARITY.md (feature x backend)
//! from the conformance suite's per-backend reports.
//!
//! The reports are `target/conformance/<backend>.tsv`, written by every
//! backend's conformance target after a full run when
//! `ESKIT_CONFORMANCE_REPORT_DIR` is set. `cargo xtask test` sets it for the
//! test step and then runs `parity --check`, so the committed table always
//! matches what the suite measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::{say, workspace_root};

/// What each scenario group checks, in the order rows appear.
const GROUPS: &[(&str, &str)] = &[
    (
        "append",
        "append and load round trip, stream and stream-type isolation, ordering",
    ),
    (
        "expected",
        "expected versions: any, no stream, stream exists, exact",
    ),
    (
        "concurrency",
        "optimistic concurrency races with exact winner counts",
    ),
    (
        "load",
        "load from version, version ranges, limits, type filters",
    ),
    (
        "fields",
        "ids (unique in the store, duplicates refused), positions, timestamps (custom ones too), schema version, codec",
    ),
    (
        "names",
        "special and malformed stream names, exact round trip",
    ),
    ("metadata", "metadata round trip and bounds"),
    (
        "idempotency",
        "idempotency keys: deduplicated retries, conflicting reuse, key lookup, command retries",
    ),
    (
        "edge",
        "payload and batch bounds, binary payloads, many streams",
    ),
    (
        "lifecycle",
        "tombstone, archive, restore, hard delete, status",
    ),
    (
        "global",
        "global reads: cursor order, resume cursor past filters and deletes, limits, filters",
    ),
    (
        "feed",
        "commit feed: wake after commit, coalescing, cancel safety, 1,000 listeners, cap",
    ),
    (
        "follow",
        "tail followers during 8 writers see the final log: 0 skipped, duplicated, reordered",
    ),
    (
        "snapshot",
        "snapshot store contract, removed by a hard delete",
    ),
    ("checkpoint", "checkpoint store contract"),
    (
        "lock",
        "lock registry: exclusion, release, cancelled waiters, fencing tokens, held leases",
    ),
    (
        "stress",
        "concurrent writers and readers checked by the history checker",
    ),
    (
        "model",
        "seeded random operations give the same outcomes as the memory model",
    ),
    (
        "close",
        "after close through one handle, every call on every handle gives the closed kind; listeners end",
    ),
    (
        "dcb",
        "tags (round trip, bounds, idempotent retries), queries by type and tag, conditional appends",
    ),
    (
        "sink",
        "transactions: a projection page's effects and cursor commit together or not at all; redelivered, overlapping, stale and racing pages take effect once",
    ),
    (
        "tenants",
        "tenant-scoped handles: streams, reads, queries, conditions, lifecycle, snapshots, checkpoints; 0 cross-tenant events under racing tenants",
    ),
    (
        "claim",
        "claim store: keys, exclusive claims under 8 workers, lease expiry hands over, stale claims refused, max attempts to dead, not-before order, seeded operations match the memory model",
    ),
];

/// Column order; backends without a report are left out.
const BACKEND_ORDER: &[&str] = &[
    "memory",
    "sqlite-file",
    "sqlite-caller-thread",
    "sqlite-memory",
    "postgres",
    "postgres-rls",
    "nats",
];

pub(crate) fn report_dir() -> PathBuf {
    crate::util::target_dir().join("conformance")
}

fn parity_file() -> PathBuf {
    workspace_root().join("STORE_PARITY.md")
}

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let check = args.iter().any(|a| a == "--check");
    let rendered = render(&report_dir())?;
    let path = parity_file();
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != rendered {
            return Err(format!(
                "STORE_PARITY.md does not match the conformance results; run `cargo xtask \
                 test` (or the conformance targets with ESKIT_CONFORMANCE_REPORT_DIR={}) and \
                 then `cargo xtask parity`",
                report_dir().display()
            ));
        }
        say("STORE_PARITY.md matches the conformance results");
        return Ok(());
    }
    std::fs::write(&path, rendered).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    say(&format!("wrote {}", path.display()));
    Ok(())
}

type Results = BTreeMap<String, BTreeMap<String, String>>;

fn read_reports(dir: &Path) -> Result<Results, String> {
    let mut by_backend = Results::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "no conformance reports in {} ({e}); run `cargo xtask test` first",
            dir.display()
        )
    })?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Some(backend) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tsv"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let scenarios = text
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
            .collect();
        by_backend.insert(backend.to_owned(), scenarios);
    }
    if by_backend.is_empty() {
        return Err(format!("no conformance reports in {}", dir.display()));
    }
    Ok(by_backend)
}

fn render(dir: &Path) -> Result<String, String> {
    let results = read_reports(dir)?;
    let mut backends: Vec<&str> = BACKEND_ORDER
        .iter()
        .copied()
        .filter(|b| results.contains_key(*b))
        .collect();
    backends.extend(
        results
            .keys()
            .map(String::as_str)
            .filter(|b| !BACKEND_ORDER.contains(b)),
    );
    let mut out = String::from(
        "# Store parity\n\n\
         Generated by `cargo xtask parity` from the conformance suite's results on each \
         backend; do not edit by hand. A cell is `passed/run` scenarios of that group, and `not offered` where the \
         backend does not provide that store; \
         `cargo xtask test` fails when this file no longer matches what the suite measured.\n\n",
    );
    out.push_str("| feature | what the scenarios check |");
    for b in &backends {
        out.push_str(&format!(" {b} |"));
    }
    out.push_str("\n|---|---|");
    for _ in &backends {
        out.push_str("---|");
    }
    out.push('\n');
    let mut groups: Vec<(String, String)> = GROUPS
        .iter()
        .map(|(g, d)| ((*g).to_owned(), (*d).to_owned()))
        .collect();
    for scenarios in results.values() {
        for name in scenarios.keys() {
            let g = group_of(name);
            if !groups.iter().any(|(k, _)| *k == g) {
                groups.push((g.clone(), String::new()));
            }
        }
    }
    for (group, what) in &groups {
        out.push_str(&format!("| {group} | {what} |"));
        for b in &backends {
            let scenarios = &results[*b];
            let in_group: Vec<&String> = scenarios
                .iter()
                .filter(|(n, _)| group_of(n) == *group)
                .map(|(_, s)| s)
                .collect();
            let passed = in_group.iter().filter(|s| s.as_str() == "passed").count();
            let ran = in_group.iter().filter(|s| s.as_str() != "not-run").count();
            let cell = if in_group.is_empty() {
                "—".to_owned()
            } else if ran == 0 {
                "not offered".to_owned()
            } else if passed == ran {
                format!("{passed}/{ran}")
            } else {
                format!("**{passed}/{ran}**")
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out.push_str("| **all** | |");
    for b in &backends {
        let s = &results[*b];
        let passed = s.values().filter(|v| v.as_str() == "passed").count();
        let ran = s.values().filter(|v| v.as_str() != "not-run").count();
        out.push_str(&format!(" {passed}/{ran} |"));
    }
    out.push_str(
        "\n\n`sqlite-file` is the SQLite backend on a database file, `sqlite-caller-thread` the same \
         with `SqliteOptions::with_calls_on_caller_thread(true)` (reads run on the awaiting thread), \
         `sqlite-memory` on `:memory:`. \
         `postgres` is PostgreSQL, each scenario on a fresh schema of the server `cargo xtask test` \
         starts; `postgres-rls` the same with the store connected as an application role bound by \
         row-level security (no superuser, not the tables' owner, only the grants of \
         `PgStore::grant_access`). \"not offered\" means the backend lacks that capability. The NATS JetStream \
         column appears once its backend exists.\n",
    );
    Ok(out)
}

fn group_of(scenario: &str) -> String {
    scenario.split('.').next().unwrap_or(scenario).to_owned()
}
