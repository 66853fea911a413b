//! Project checks that `cargo test` enforces: the core has no dependencies,
//! and backends never depend on each other.

use std::fs;
use std::path::{Path, PathBuf};

const BACKENDS: &[&str] = &["eskit-sqlite", "eskit-pg", "eskit-nats"];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Names of the packages listed in the `[dependencies]` table (and
/// target-specific `dependencies` tables) of a manifest.
fn normal_dependencies(manifest: &str) -> Vec<String> {
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let header = line.trim_matches(|c| c == '[' || c == ']');
            in_deps = header == "dependencies" || header.ends_with(".dependencies");
            if let Some(dep) = header.strip_prefix("dependencies.") {
                deps.push(dep.to_owned());
                in_deps = false;
            }
            continue;
        }
        if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            deps.push(name.trim().trim_matches('"').to_owned());
        }
    }
    deps
}

#[test]
fn core_has_no_dependencies() -> Result<(), std::io::Error> {
    let manifest = fs::read_to_string(crates_dir().join("eskit-core/Cargo.toml"))?;
    assert_eq!(normal_dependencies(&manifest), Vec::<String>::new());
    Ok(())
}

#[test]
fn backends_do_not_depend_on_each_other() -> Result<(), std::io::Error> {
    for backend in BACKENDS {
        let path = crates_dir().join(backend).join("Cargo.toml");
        let Ok(manifest) = fs::read_to_string(&path) else {
            continue; // not written yet
        };
        let deps = normal_dependencies(&manifest);
        for other in BACKENDS.iter().filter(|b| *b != backend) {
            assert!(
                !deps.iter().any(|d| d == other),
                "{backend} depends on {other}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_processor_depends_on_the_core_and_tokio_only() -> Result<(), std::io::Error> {
    let manifest = fs::read_to_string(crates_dir().join("eskit-processor/Cargo.toml"))?;
    let mut deps = normal_dependencies(&manifest);
    deps.sort();
    assert_eq!(deps, ["eskit-core.workspace", "tokio"]);
    // Tokio's features are chosen one by one: `signal` is there for the
    // runner's SIGTERM / ctrl-c shutdown; add others deliberately.
    let tokio = manifest
        .split("[dev-dependencies]")
        .next()
        .and_then(|normal| normal.lines().find(|l| l.trim_start().starts_with("tokio")))
        .unwrap_or_default();
    assert_eq!(
        tokio.trim(),
        r#"tokio = { workspace = true, features = ["rt", "time", "sync", "macros", "signal"] }"#
    );
    Ok(())
}

#[test]
fn the_parser_sees_dependencies() {
    let sample = "[package]\nname = \"x\"\n[dependencies]\nfoo = \"1\"\nbar.workspace = true\n\n[dependencies.baz]\nversion = \"1\"\n[dev-dependencies]\nqux = \"1\"\n";
    assert_eq!(normal_dependencies(sample), ["foo", "bar.workspace", "baz"]);
}
