//! The README's step-by-step block, verbatim, in a fresh directory: every command exits 0.

use std::path::Path;

use crate::util::{ingot_bin, output};

/// The commands of the first `sh` block after `marker` in README.md.
fn readme_block(marker: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let after = &readme[readme.find(marker).expect("the marker is in README.md")..];
    let start = after.find("```sh\n").unwrap() + 6;
    let end = start + after[start..].find("```").unwrap();
    after[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_step_by_step_block_works_verbatim_from_a_fresh_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // As in a clone: the examples are beside the commands.
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        d.join("examples"),
    )
    .unwrap();
    let bin = ingot_bin();
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let commands = readme_block("The pieces, one at a time");
    assert!(commands.len() >= 6, "{commands:?}");
    for cmd in &commands {
        let out = output(
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .current_dir(d)
                .env("PATH", &path)
                .env("HOME", d)
                .env("TMPDIR", d)
                .env_remove("INGOT_HISTORY")
                .env_remove("INGOT_MASTER")
                .env_remove("XDG_STATE_HOME"),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "`{cmd}` failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The apply did its work, and its history is where `ingot history --master` looked.
    assert!(d.join("ingot-hello/motd").is_file());
    assert!(d.join("master/logs/history.db").is_file());
}
