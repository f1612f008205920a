//! Helpers shared by the integration tests: the real `ingot` binary and throwaway dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `ingot` binary cargo built for these tests.
pub fn ingot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ingot"))
}

/// A command running the real `ingot` binary with a private history location.
pub fn ingot(dir: &Path) -> Command {
    let mut c = Command::new(ingot_bin());
    c.current_dir(dir)
        .env("INGOT_HISTORY", dir.join("history.db"))
        .stdin(Stdio::null());
    c
}

/// Runs and returns the output, with stderr shown when the test fails.
pub fn output(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("ingot runs");
    eprintln!(
        "--- stderr of {cmd:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes an executable script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether the tests run as root (the owner of this process's /proc entry).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        == 0
}

/// Directord's functional suite (`../shared/directord-suite`), when it is there.
pub fn directord_suite() -> Option<std::path::PathBuf> {
    let suite = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/directord-suite");
    if suite.join("functional-tests.yaml").exists() {
        Some(suite)
    } else {
        eprintln!("skipping: {} is not there", suite.display());
        None
    }
}
