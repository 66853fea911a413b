//! `cargo xtask test`: the single entry point of the gate.
//!
//! `cargo fetch` of every crate the lock file names (for every platform, as
//! `cargo metadata` and cargo-deny want them), fmt check, clippy with `-D warnings`, the dependency rule for eskit-core,
//! every test and doctest against real PostgreSQL and NATS servers
//! (provisioned unless `ESKIT_PG_URL` / `ESKIT_NATS_URL` are set), the demo
//! examples, STORE_PARITY.md against the conformance results, docs with
//! `-D warnings`, and cargo-deny (bans, licenses, sources).
//!
//! Nothing here may rely on what a developer's machine happens to have: the
//! fetch step downloads before anything runs offline, cargo-deny is installed
//! when missing, and the servers are provisioned. `--fresh` proves it: the
//! whole gate runs again under an empty `CARGO_HOME` and its own target
//! directory (no registry cache, no cargo-deny, no installed nats-server, no
//! earlier build), both in a temporary directory that is removed afterwards.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::servers::Servers;
use crate::util::{cargo, run_cmd, say};

/// cargo-deny release the gate installs when it is missing.
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Set in the environment of a `--fresh` run's inner gate.
const FRESH_ENV: &str = "ESKIT_XTASK_FRESH";

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--fresh") {
        return run_fresh(args);
    }
    let quick = args.iter().any(|a| a == "--no-servers");
    let start = Instant::now();
    // Offline steps below (cargo-deny) need every platform's crates, which a
    // build alone does not download; fetch them all first, once.
    step("fetch", || run_cmd(cargo().args(["fetch", "--locked"])))?;
    step("fmt", || {
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy", || {
        run_cmd(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("core has no dependencies", core_has_no_dependencies)?;
    step("tests", || {
        let servers = if quick {
            None
        } else {
            Some(Servers::provision()?)
        };
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--all-features", "--locked"]);
        if quick {
            // eskit-pg's tests fail without a server (never skip): leave
            // them out of a run that starts none.
            say("--no-servers: leaving out eskit-pg, whose tests need PostgreSQL");
            cmd.args(["--exclude", "eskit-pg"]);
        }
        // Every conformance target writes its report for the parity step.
        let reports = crate::parity::report_dir();
        let _ = std::fs::remove_dir_all(&reports);
        cmd.env("ESKIT_CONFORMANCE_REPORT_DIR", &reports);
        if let Some(s) = &servers {
            s.apply(&mut cmd);
        }
        run_cmd(&mut cmd)
        // `servers` drops here: both servers stop and their data goes away.
    })?;
    step("demo (the README's first command)", || {
        run_cmd(cargo().args(["run", "--locked", "--example", "bank"]))?;
        run_cmd(cargo().args(["run", "--locked", "--example", "bank_live"]))?;
        run_cmd(cargo().args(["run", "--locked", "--example", "counter"]))?;
        run_cmd(cargo().args(["run", "--locked", "--example", "inventory"]))?;
        run_cmd(cargo().args(["run", "--locked", "--example", "courses"]))
    })?;
    step("store parity", || {
        crate::parity::run(&["--check".to_owned()])
    })?;
    step("docs", || {
        run_cmd(
            cargo()
                .args([
                    "doc",
                    "--workspace",
                    "--no-deps",
                    "--all-features",
                    "--locked",
                ])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    step("cargo-deny", || {
        ensure_cargo_deny()?;
        run_cmd(cargo().args([
            "deny",
            "--offline",
            "--locked",
            "check",
            "bans",
            "licenses",
            "sources",
        ]))
    })?;
    say(&format!(
        "xtask test: all steps passed in {:.0?}",
        start.elapsed()
    ));
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    say(&format!("==> {name}"));
    let t = Instant::now();
    let r = f().map_err(|e| format!("step `{name}` failed: {e}"));
    say(&format!("<== {name} ({:.1?})", t.elapsed()));
    r
}

fn core_has_no_dependencies() -> Result<(), String> {
    let out = cargo()
        .args([
            "tree",
            "-p",
            "eskit-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--locked",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = tree.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() != 1 || !lines[0].starts_with("eskit-core ") {
        return Err(format!(
            "eskit-core must have no dependencies, cargo tree shows:\n{tree}"
        ));
    }
    Ok(())
}

/// `cargo xtask test --fresh`: the gate as a brand-new machine runs it.
fn run_fresh(args: &[String]) -> Result<(), String> {
    let keep = args.iter().any(|a| a == "--keep");
    let inner: Vec<&String> = args
        .iter()
        .filter(|a| *a != "--fresh" && *a != "--keep")
        .collect();
    let root = fresh_dir()?;
    let cargo_home = root.join("cargo-home");
    let target = root.join("target");
    std::fs::create_dir_all(cargo_home.join("bin"))
        .map_err(|e| format!("cannot create {}: {e}", cargo_home.display()))?;
    // The new CARGO_HOME's bin comes first, so the cargo-deny this run
    // installs is the one it runs.
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![cargo_home.join("bin")];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs).map_err(|e| format!("cannot build PATH: {e}"))?
        }
        None => cargo_home.join("bin").into_os_string(),
    };
    let exe = std::env::current_exe().map_err(|e| format!("cannot find xtask itself: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("test")
        .args(inner)
        .current_dir(crate::util::workspace_root())
        .env("CARGO_HOME", &cargo_home)
        .env("CARGO_TARGET_DIR", &target)
        .env("PATH", path)
        .env(FRESH_ENV, "1");
    say(&format!(
        "xtask test --fresh: empty CARGO_HOME {} and target dir {}",
        cargo_home.display(),
        target.display()
    ));
    let t = Instant::now();
    let result = run_cmd(&mut cmd);
    say(&format!(
        "xtask test --fresh: finished in {:.0?}",
        t.elapsed()
    ));
    if keep {
        say(&format!("xtask test --fresh: kept {}", root.display()));
    } else if let Err(e) = std::fs::remove_dir_all(&root) {
        say(&format!(
            "xtask test --fresh: cannot remove {}: {e}",
            root.display()
        ));
    }
    result
}

/// A new, empty directory for a fresh run, under the system's temp dir.
fn fresh_dir() -> Result<PathBuf, String> {
    let out = Command::new("mktemp")
        .args(["-d", "-t", "eskit-fresh.XXXXXX"])
        .output()
        .map_err(|e| format!("cannot run mktemp: {e}"))?;
    if !out.status.success() {
        return Err("mktemp failed".to_owned());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn ensure_cargo_deny() -> Result<(), String> {
    if std::env::var_os(FRESH_ENV).is_some() {
        // A fresh run must use only what it installed itself.
        let home = std::env::var_os("CARGO_HOME").map(PathBuf::from);
        if home.is_some_and(|h| h.join("bin").join("cargo-deny").is_file()) {
            return Ok(());
        }
        return install_cargo_deny();
    }
    let installed = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["deny", "--version"])
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DENY_VERSION)
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    install_cargo_deny()
}

fn install_cargo_deny() -> Result<(), String> {
    say(&format!(
        "cargo-deny {CARGO_DENY_VERSION} is missing; installing it"
    ));
    run_cmd(cargo().args([
        "install",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
        "--locked",
    ]))
}
