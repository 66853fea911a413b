//! Small helpers shared by the xtask commands.

use std::path::PathBuf;
use std::process::Command;

/// Prints a line to stderr (xtask's own output channel).
pub(crate) fn say(msg: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{msg}");
    }
}

/// The cargo binary that invoked us.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut c = Command::new(cargo);
    c.current_dir(workspace_root());
    c
}

/// The cargo target directory: `CARGO_TARGET_DIR` when set (relative to the
/// workspace root), else `<root>/target`. Everything xtask caches (installed
/// tools, conformance reports, bench output) lives here, so a run with its own
/// target directory (`cargo xtask test --fresh`) starts from nothing.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The workspace root (xtask's manifest dir is `<root>/xtask`).
pub(crate) fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

/// Runs a command, failing with its description when it does not succeed.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    say(&format!("$ {}", describe(cmd)));
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start `{}`: {e}", describe(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", describe(cmd)))
    }
}

/// A shell-like rendering of a command for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Value of `--name value` in `args`.
pub(crate) fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Prints a line to stdout (a command's result, such as a summary or table).
pub(crate) fn out(msg: &str) {
    #[allow(clippy::print_stdout)]
    {
        println!("{msg}");
    }
}

/// Whether the workspace has a package named `name` under `crates/`.
pub(crate) fn package_exists(name: &str) -> bool {
    package_dir(name).is_some()
}

/// The directory of the workspace package named `name`, if any.
pub(crate) fn package_dir(name: &str) -> Option<PathBuf> {
    let wanted = format!("name = \"{name}\"");
    std::fs::read_dir(workspace_root().join("crates"))
        .ok()?
        .flatten()
        .map(|d| d.path())
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == wanted))
        })
}
