//! `eskit-codegen [--check]`: regenerates the workspace's committed code, or
//! with `--check` fails when it is stale. Run it as `cargo xtask codegen`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = dir.ancestors().nth(2).unwrap_or(dir);
    let result = if check {
        eskit_codegen::check(root).map(|()| "generated files are current".to_owned())
    } else {
        eskit_codegen::write(root).map(|changed| {
            if changed.is_empty() {
                "generated files are current".to_owned()
            } else {
                format!("regenerated {}", changed.join(", "))
            }
        })
    };
    #[allow(clippy::print_stderr)]
    match result {
        Ok(msg) => {
            eprintln!("eskit-codegen: {msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eskit-codegen: error: {e}");
            ExitCode::FAILURE
        }
    }
}
