//! `ingot run`: exit codes, events output, nesting through fd 3.

use channel3::{Body, Message, Reader};

use crate::util::{ingot, output, script};

/// Shell function writing its argument as a netstring on fd 3 (LC_ALL=C counts bytes).
const NS: &str = "LC_ALL=C; ns() { printf '%d:%s,' \"${#1}\" \"$1\" >&3; }\n";

fn events(path: &std::path::Path) -> Vec<Message> {
    Reader::new(std::fs::File::open(path).unwrap())
        .map(Result::unwrap)
        .collect()
}

#[test]
fn exit_code_and_stdout_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(ingot(dir.path()).args([
        "run",
        "--no-history",
        "--",
        "sh",
        "-c",
        "echo hi; exit 7",
    ]));
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"hi\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sh stdout: hi") && err.contains("sh exitcode: 7"),
        "{err}"
    );
}

#[test]
fn killed_child_exits_128_plus_signal() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(ingot(dir.path()).args([
        "run",
        "--no-history",
        "--timeout",
        "0.2",
        "--",
        "sleep",
        "10",
    ]));
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn missing_program_is_127_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(ingot(dir.path()).args(["run", "--no-history", "--", "/no/such/prog"]));
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod +x"));
}

#[test]
fn usage_error_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(ingot(dir.path()).args(["run"]));
    assert_eq!(out.status.code(), Some(2));
}

/// A script run by a runner runs `ingot run`, which runs a script that runs `ingot run`: the
/// top sees names three levels deep.
#[test]
fn nested_runners_three_deep_form_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let bin = crate::util::ingot_bin();
    let leaf = dir.path().join("leaf.sh");
    script(
        &leaf,
        &format!("#!/bin/sh\n{NS}ns '[null,\"step\",{{\"label\":\"x\"}}]'\necho leaf-out\n"),
    );
    let mid = dir.path().join("mid.sh");
    script(
        &mid,
        &format!(
            "#!/bin/sh\nexec {} run --no-history --name inner -- {}\n",
            bin.display(),
            leaf.display()
        ),
    );
    let ev = dir.path().join("events");
    let out = output(
        ingot(dir.path())
            .args(["run", "--no-history", "--events"])
            .arg(&ev)
            .args([
                "--name",
                "outer",
                "--",
                bin.to_str().unwrap(),
                "run",
                "--no-history",
                "--name",
                "middle",
                "--",
                mid.to_str().unwrap(),
            ]),
    );
    assert!(out.status.success());
    let ms = events(&ev);
    let names: std::collections::BTreeSet<_> = ms.iter().filter_map(|m| m.name.clone()).collect();
    assert!(names.contains("outer/middle/inner"), "{names:?}");
    let step = ms
        .iter()
        .find(|m| m.key == "step")
        .expect("the leaf's frame arrives");
    assert_eq!(step.name.as_deref(), Some("outer/middle/inner"));
    assert!(ms
        .iter()
        .any(|m| m.name.as_deref() == Some("outer/middle/inner")
            && matches!(m.body(), Body::Stdout(ref l) if l.line == "leaf-out\n")));
}

/// A runner started with a fd 3 of its own must not let its child write there directly.
#[test]
fn inherited_fd3_does_not_leak_to_children() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("fd3");
    let kid = dir.path().join("kid.sh");
    script(
        &kid,
        &format!("#!/bin/sh\n{NS}ns '[null,\"step\",{{\"label\":1}}]'\n"),
    );
    let cmd = format!(
        "exec 3>{} && exec {} run --no-history --name kid -- {}",
        ev.display(),
        crate::util::ingot_bin().display(),
        kid.display()
    );
    let out = output(std::process::Command::new("sh").arg("-c").arg(cmd));
    assert!(out.status.success());
    let ms = events(&ev);
    assert!(!ms.is_empty());
    assert!(
        ms.iter().all(|m| m.name.as_deref() == Some("kid")),
        "a frame bypassed relabelling: {ms:?}"
    );
}
