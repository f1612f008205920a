//! Every exit code of the one table (`runner::exit`, README "Exit codes"), from the real binary.

use std::process::Output;

use crate::net_support::Fleet;
use crate::util::{ingot, output, script};

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A master and a minion tree whose prescription writes one file under the test's directory.
fn trees(d: &std::path::Path, prescribe: &str) {
    for what in ["master", "minion"] {
        assert!(output(ingot(d).args(["init", what, what])).status.success());
    }
    script(&d.join("master/actors/prescribe"), prescribe);
}

fn apply(d: &std::path::Path, extra: &[&str]) -> Output {
    output(
        ingot(d)
            .args([
                "apply", "--master", "master", "--minion", "minion", "--name", "m1",
            ])
            .args(["--no-history"])
            .args(extra),
    )
}

#[test]
fn success_failure_and_changes_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let file = d.join("out.txt");
    trees(
        d,
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho '[{{\"kind\":\"file\",\"path\":\"{}\",\"content\":\"x\"}}]'\n",
            file.display()
        ),
    );
    // Changes pending: 0 without --detailed-exitcode, 2 with it; nothing changed.
    assert_eq!(code(&apply(d, &["--check"])), 0);
    let out = apply(d, &["--check", "--detailed-exitcode"]);
    assert_eq!(
        code(&out),
        runner::exit::CHANGES_PENDING,
        "{}",
        stderr(&out)
    );
    assert!(!file.exists());
    // --detailed-exitcode without --check is refused, not ignored.
    let out = apply(d, &["--detailed-exitcode"]);
    assert_eq!(code(&out), runner::exit::USAGE, "{}", stderr(&out));
    assert!(!file.exists(), "a refused command changes nothing");
    // Success, then nothing pending.
    assert_eq!(code(&apply(d, &[])), runner::exit::SUCCESS);
    assert_eq!(
        code(&apply(d, &["--check", "--detailed-exitcode"])),
        runner::exit::SUCCESS
    );
    // A run that fails: 1.
    script(
        &d.join("master/actors/prescribe"),
        "#!/bin/sh\necho 'prescribe: no such role' >&2\nexit 1\n",
    );
    let out = apply(d, &[]);
    assert_eq!(code(&out), runner::exit::FAILED, "{}", stderr(&out));
}

#[test]
fn bad_input_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cases: &[&[&str]] = &[
        // An unknown flag.
        &["apply", "--bogus"],
        // A master or minion tree that is not there.
        &["apply", "--master", "nowhere", "--minion", "nowhere"],
        &[
            "master",
            "--master",
            "nowhere",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        &["facts", "--minion", "nowhere"],
        &["resource", "file", "describe", "--minion", "nowhere"],
        // A run id the history does not have.
        &["history", "--history", "h.db", "show", "nosuchrun"],
        // A certificate never issued.
        &["certs", "--master", "m", "revoke", "nobody"],
    ];
    assert!(output(ingot(d).args(["init", "master", "m"]))
        .status
        .success());
    assert!(output(ingot(d).args(["certs", "init", "--master", "m"]))
        .status
        .success());
    // The history exists, so "show nosuchrun" is about the run, not the file.
    trees(d, "#!/bin/sh\ncat >/dev/null\necho '[]'\n");
    let out = output(
        ingot(d)
            .args(["apply", "--master", "master", "--minion", "minion"])
            .args(["--history", "h.db"]),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for args in cases {
        let out = output(ingot(d).args(*args));
        assert_eq!(
            code(&out),
            runner::exit::USAGE,
            "ingot {}: {}",
            args.join(" "),
            stderr(&out)
        );
        assert!(
            !stderr(&out).trim().is_empty(),
            "ingot {}: says why",
            args.join(" ")
        );
    }
}

#[test]
fn a_master_that_cannot_be_reached_is_unavailable() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert!(output(ingot(d).args(["init", "master", "m"]))
        .status
        .success());
    // No master serves the tree: every command that needs it says so, with one code.
    let cases: &[&[&str]] = &[
        &["apply", "--master", "m", "--targets", "web*"],
        &["master", "--master", "m", "run", "--targets", "web*"],
        &["exec", "--master", "m", "--verb", "RUN", "true"],
        &["manage", "--master", "m", "--list-nodes"],
    ];
    for args in cases {
        let out = output(ingot(d).args(*args));
        assert_eq!(
            code(&out),
            runner::exit::UNAVAILABLE,
            "ingot {}: {}",
            args.join(" "),
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("cannot reach the master"),
            "ingot {}: {}",
            args.join(" "),
            stderr(&out)
        );
    }
}

#[test]
fn targets_that_match_nothing_and_a_second_master() {
    let fleet = Fleet::start(5);
    let d = fleet.path();
    let out = output(ingot(d).args(["apply", "--master", "m", "--targets", "nomatch*"]));
    assert_eq!(code(&out), runner::exit::USAGE, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no minion matches"),
        "{}",
        stderr(&out)
    );
    // A second master on the same tree is refused, and the first keeps its socket.
    let out = output(ingot(d).args([
        "master",
        "--master",
        "m",
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(code(&out), runner::exit::UNAVAILABLE, "{}", stderr(&out));
    assert!(stderr(&out).contains("already serving"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pid {}", fleet.master_pid())),
        "names the running master: {}",
        stderr(&out)
    );
    let out = output(ingot(d).args(["manage", "--master", "m", "--list-nodes"]));
    assert_eq!(
        code(&out),
        0,
        "the first master still answers: {}",
        stderr(&out)
    );
}
