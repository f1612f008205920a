//! Directord through the master: three minions on loopback running Directord's own suite,
//! QUERY coordination across minions, and run-once landing on one minion only.

use std::path::Path;
use std::process::Output;

use crate::net_support::Fleet;
use crate::util::{ingot, output};

const NAMES: [&str; 3] = ["d1", "d2", "d3"];

fn fleet() -> Fleet {
    let mut fleet = Fleet::start(5);
    for n in NAMES {
        fleet.minion_tree(n, "");
        fleet.start_minion(n, &format!("machine-{n}"), None);
    }
    fleet.wait_connected(&NAMES);
    fleet
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn orchestrate(fleet: &Fleet, cwd: &Path, file: &str) -> Output {
    output(
        ingot(cwd)
            .env("INGOT_HISTORY", fleet.path().join("history.db"))
            .args(["orchestrate", file, "--check", "--master"])
            .arg(fleet.master_dir()),
    )
}

#[test]
fn directord_suite_runs_green_on_three_minions_through_the_master() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/directord-suite");
    if !suite.join("functional-tests.yaml").exists() {
        eprintln!("skipping: {} is not there", suite.display());
        return;
    }
    let fleet = fleet();
    for file in ["functional-tests.yaml", "functional-tests-query.yaml"] {
        let o = orchestrate(&fleet, &suite, file);
        let out = text(&o);
        assert!(o.status.success(), "{file}: {out}\n{}", fleet.master_log());
        assert!(!out.contains("Job Failed"), "{file}: {out}");
        assert!(out.contains("Job Success"), "{file}: {out}");
        // Every job that is not run-once answered on all three minions.
        for line in out.lines().filter(|l| l.starts_with("Job Success")) {
            if !line.contains("--run-once") {
                assert!(line.contains("[d1, d2, d3]"), "{file}: {line}");
            }
        }
    }
    // The query suite decoded the file found on whichever minion ran the run-once job.
    let hosts = std::fs::read_to_string("/tmp/base64-hosts").unwrap();
    assert_eq!(hosts, std::fs::read_to_string("/etc/hosts").unwrap());
}

#[test]
fn run_once_lands_on_one_minion_and_query_merges_every_minion() {
    let fleet = fleet();
    let d = fleet.path();
    let m = fleet.master_dir();
    let exec = |verb: &str, s: &str| {
        output(
            ingot(d)
                .args(["exec", "--stream", "--verb", verb, "--master"])
                .arg(&m)
                .arg(s),
        )
    };
    let counter = d.join("once.txt");
    let o = exec(
        "RUN",
        &format!("--run-once --skip-cache echo once >> {}", counter.display()),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "once\n");
    assert_eq!(text(&o).matches("Job Success").count(), 1, "{}", text(&o));

    // An ARG on one minion, QUERY everywhere, then every minion sees it through `query`.
    let o = output(
        ingot(d)
            .args(["exec", "--verb", "ARG", "--target", "d2", "--master"])
            .arg(&m)
            .arg("secret fromd2"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("[d2]"), "{}", text(&o));
    let o = exec("QUERY", "secret");
    assert!(o.status.success(), "{}", text(&o));
    let o = exec(
        "RUN",
        "--skip-cache echo {{ query.values() | map(attribute='secret') | select('defined') | list | first }}",
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for n in NAMES {
        assert!(out.contains(&format!("STDOUT: {n} = fromd2")), "{out}");
    }

    // ADD over the network: content and hash travel with the job.
    std::fs::write(d.join("payload.txt"), "payload\n").unwrap();
    let dest = d.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let o = exec(
        "ADD",
        &format!(
            "--skip-cache payload.txt \"{}/{{{{ 'copied' }}}}.txt\"",
            dest.display()
        ),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dest.join("copied.txt")).unwrap(),
        "payload\n"
    );

    // Unknown targets: a clear failure.
    let o = output(
        ingot(d)
            .args(["exec", "--verb", "RUN", "--target", "nope", "--master"])
            .arg(&m)
            .arg("true"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("Target unknown"), "{}", text(&o));
}
