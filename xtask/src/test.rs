//! `cargo xtask test`: the single entry point of the gate.
//!
//! fmt check, clippy with `-D warnings`, the dependency rule for eskit-core,
//! every test and doctest against real PostgreSQL and NATS servers
//! (provisioned unless `ESKIT_PG_URL` / `ESKIT_NATS_URL` are set), the demo
//! examples, STORE_PARITY.md against the conformance results, docs with
//! `-D warnings`, and cargo-deny (bans, licenses, sources).

use std::process::Command;
use std::time::Instant;

use crate::servers::Servers;
use crate::util::{cargo, run_cmd, say};

/// cargo-deny release the gate installs when it is missing.
const CARGO_DENY_VERSION: &str = "0.20.2";

pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--no-servers");
    let start = Instant::now();
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
        run_cmd(cargo().args(["run", "--locked", "--example", "counter"]))
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

fn ensure_cargo_deny() -> Result<(), String> {
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
