//! One apply, two paths: an example applied to the local minion tree and, through the running
//! master, to a connected minion gives the same plan, the same recap and the same exit codes.

use std::path::Path;
use std::process::Output;

use crate::net_support::Fleet;
use crate::util::{ingot, output};

/// An alternate root with the minimal etc/ the basics example manages (users, groups, cron).
fn fresh_root(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for f in ["passwd", "group", "shadow", "gshadow"] {
        let host = std::fs::read_to_string(Path::new("/etc").join(f)).unwrap_or_default();
        let root_line: String = host
            .lines()
            .filter(|l| l.starts_with("root:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(root.join("etc").join(f), root_line).unwrap();
    }
}

/// The recap with the durations (the one thing two runs cannot share) blanked.
fn recap(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| match l.rsplit_once(char::is_whitespace) {
            Some((head, last))
                if last.ends_with('s') && last.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                format!("{head} <duration>")
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_same_example_applied_locally_and_through_the_master_reports_the_same() {
    let mut fleet = Fleet::start(30);
    let root = fleet.path().join("root");
    // The prescription (run by whichever process runs the routine) manages this root.
    fleet.master_env = vec![("INGOT_ROOT".into(), root.display().to_string())];
    fleet.kill_master();
    fleet.start_master(30);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/basics/master/actors");
    std::fs::copy(
        example.join("prescribe"),
        fleet.master_dir().join("actors/prescribe"),
    )
    .unwrap();
    fleet.minion_tree("p1", "");
    fleet.start_minion("p1", "machine-p1", None);
    fleet.wait_connected(&["p1"]);
    let d = fleet.path().to_owned();
    let local = |extra: &[&str]| {
        output(
            ingot(&d)
                .env("INGOT_ROOT", &root)
                .args(["apply", "--master", "m", "--minion", "p1", "--name", "p1"])
                .args(["--no-history"])
                .args(extra),
        )
    };
    let through_master = |extra: &[&str]| {
        output(
            ingot(&d)
                .args(["apply", "--master", "m", "--targets", "p1", "--no-history"])
                .args(["--concurrency", "1"])
                .args(extra),
        )
    };
    let same = |what: &str, a: &Output, b: &Output| {
        assert_eq!(a.status.code(), b.status.code(), "{what}: exit codes");
        assert_eq!(recap(a), recap(b), "{what}: recaps");
        assert!(!recap(a).is_empty(), "{what}: a recap was printed");
    };

    // The plan: every step pending, changes pending as the detailed exit code.
    fresh_root(&root);
    let check = ["--check", "--detailed-exitcode"];
    let (a, b) = (local(&check), through_master(&check));
    assert_eq!(
        a.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    same("check", &a, &b);

    // The first run changes everything, whichever path runs it.
    let b = through_master(&[]);
    fresh_root(&root);
    let a = local(&[]);
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert!(recap(&a).contains("changed"), "{}", recap(&a));
    same("first run", &a, &b);

    // Converged: nothing to do on either path.
    let (a, b) = (local(&[]), through_master(&[]));
    same("second run", &a, &b);
    let (a, b) = (local(&check), through_master(&check));
    assert_eq!(a.status.code(), Some(0));
    same("check when converged", &a, &b);
}
