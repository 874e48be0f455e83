//! External tools a test needs (`promtool`, `kubernetes-validate`): found on
//! `PATH`, or the test is skipped with a loud line, except in CI
//! (`CI=true`), where a missing tool fails it: `.ci/run` installs them.
//!
//! Include it with `#[path = "common/tool.rs"] mod tool;`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The tool's path, or `None` (after saying so on stderr) outside CI.
/// `install` says how to get it. Panics in CI.
pub fn require(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(path) = find_on_path(name) {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci {
        panic!("{name} is not installed, and CI=true: this test must run in CI ({install}; .ci/run does it)");
    }
    // Straight to the process's stderr: the harness captures eprintln! of a
    // passing test, and this must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n======== SKIPPED: {name} not installed ({install}) ========\n"
    );
    None
}

/// The tool's path when it is installed; no skip line (for optional checks).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
