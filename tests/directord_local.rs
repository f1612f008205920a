//! Directord on one local minion: `ingot exec` and `ingot orchestrate` with the real binary.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::{ingot, output};

fn minion(dir: &Path) -> PathBuf {
    let m = dir.join("minion");
    let out = output(ingot(dir).args(["init", "minion"]).arg(&m));
    assert!(out.status.success());
    m
}

fn exec(dir: &Path, m: &Path, verb: &str, s: &str) -> Output {
    output(
        ingot(dir)
            .args(["exec", "--name", "m1", "--verb", verb, "--minion"])
            .arg(m)
            .arg(s),
    )
}

fn orchestrate(dir: &Path, m: &Path, file: &Path, extra: &[&str]) -> Output {
    output(
        ingot(dir)
            .args(["orchestrate", "--name", "m1", "--minion"])
            .arg(m)
            .args(extra)
            .arg(file),
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn functional_suite_runs_green_then_from_cache() {
    let Some(suite) = crate::util::directord_suite() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let run = || {
        output(
            ingot(&suite)
                .env("INGOT_HISTORY", d.path().join("history.db"))
                .args([
                    "orchestrate",
                    "functional-tests.yaml",
                    "--check",
                    "--minion",
                ])
                .arg(&m),
        )
    };
    let first = run();
    let out = text(&first);
    assert!(first.status.success(), "{out}");
    assert!(!out.contains("Job Failed"), "{out}");
    assert_eq!(out.matches("Job Success").count(), 54, "{out}");
    let second = run();
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    // The suite ends with CACHEEVICT all, so the second run executes everything again.
    assert!(!out.contains("Job Failed"), "{out}");
    assert!(!out.contains("task skipped"), "{out}");
}

#[test]
fn cache_skips_successes_but_reruns_failures_and_skip_cache() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let f = d.path().join("count");
    let cmd = format!("echo x >> {}", f.display());
    assert!(exec(d.path(), &m, "RUN", &cmd).status.success());
    let again = exec(d.path(), &m, "RUN", &cmd);
    assert!(again.status.success());
    assert!(text(&again).contains("task skipped"), "{}", text(&again));
    assert_eq!(lines(&f), 1);
    assert!(exec(d.path(), &m, "RUN", &format!("--skip-cache {cmd}"))
        .status
        .success());
    assert_eq!(lines(&f), 2);

    let g = d.path().join("fails");
    let failing = format!("echo x >> {}; exit 3", g.display());
    let o = exec(d.path(), &m, "RUN", &failing);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("Job Failed"), "{}", text(&o));
    assert_eq!(exec(d.path(), &m, "RUN", &failing).status.code(), Some(1));
    assert_eq!(lines(&g), 2, "a failure is never a cache hit");
}

#[test]
fn env_and_stdout_arg_feed_later_jobs() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let f = d.path().join("out");
    let yaml = d.path().join("o.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- jobs:\n  - ENV: GREETING 'hello  there'\n  - RUN: --stdout-arg who echo world\n  - RUN: echo \"$GREETING {{{{ who }}}}\" > {}\n",
            f.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "hello  there world\n");
}

#[test]
fn parent_failure_stops_its_later_jobs_only() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let (a, b) = (d.path().join("after"), d.path().join("other"));
    let yaml = d.path().join("o.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- jobs:\n  - RUN: --skip-cache true\n  - RUN: --skip-cache false\n  - RUN: touch {}\n- jobs:\n  - RUN: touch {}\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &["--check"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("Job omitted, parent failure"), "{out}");
    assert!(out.contains("FAILED JOBS"), "{out}");
    assert!(!a.exists(), "a job after the failure ran");
    assert!(b.exists(), "another orchestration was stopped too");
}

#[test]
fn timeout_kills_the_command_and_its_children() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let pid = d.path().join("pid");
    let start = Instant::now();
    let o = exec(
        d.path(),
        &m,
        "RUN",
        &format!(
            "--timeout 1 --skip-cache sleep 60 & echo $! > {}; wait",
            pid.display()
        ),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("timed out after 1s"), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(20));
    let child: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let alive = std::path::Path::new(&format!("/proc/{child}")).exists()
        && !std::fs::read_to_string(format!("/proc/{child}/stat"))
            .unwrap_or_default()
            .contains(") Z");
    assert!(
        !alive,
        "the backgrounded sleep {child} survived the timeout"
    );
}

#[test]
fn async_orchestrations_overlap_and_sentinel_drains_queues() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let yaml = d.path().join("a.yaml");
    std::fs::write(
        &yaml,
        "- async: true\n  jobs:\n  - RUN: --skip-cache sleep 2\n- async: true\n  jobs:\n  - RUN: --skip-cache sleep 2\n- async: true\n  jobs:\n  - RUN: --skip-cache sleep 2\n",
    )
    .unwrap();
    let start = Instant::now();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        start.elapsed() < Duration::from_millis(5000),
        "3 × 2 s took {:?}",
        start.elapsed()
    );

    let late = d.path().join("late");
    let yaml = d.path().join("s.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- async: true\n  jobs:\n  - RUN: --skip-cache sleep 1\n  - RUN: touch {}\n- jobs:\n  - QUEUESENTINEL: true\n",
            late.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(text(&o).contains("Omitted due to sentinel"), "{}", text(&o));
    assert!(!late.exists(), "a queued job ran after QUEUESENTINEL");
}

#[test]
fn bad_verb_strings_and_unknown_verbs_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let o = exec(d.path(), &m, "RUN", "--bogus echo hi");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown option --bogus") && err.contains("--skip-cache"),
        "{err}"
    );
    let o = exec(d.path(), &m, "NOPE", "x");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NOPE: no such verb"), "{err}");
    assert!(
        err.contains("resources/nope_verb"),
        "names the executables looked for: {err}"
    );
    assert!(
        !err.contains("/tmp/"),
        "no scratch path in the message: {err}"
    );
    let o = exec(d.path(), &m, "SERVICE", "--restarted --stopped nginx");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be combined"));
    let o = exec(d.path(), &m, "ADD", "missing.txt /tmp/x");
    assert!(String::from_utf8_lossy(&o.stderr).contains("[ missing.txt ] was not found"));
    let o = exec(d.path(), &m, "RUN", "--exec-help");
    assert!(o.status.success());
    assert!(text(&o).starts_with("usage: RUN"), "{}", text(&o));
}

#[test]
fn job_wait_without_a_master_checks_this_minion_only() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let o = exec(d.path(), &m, "RUN", "echo waited for");
    assert!(o.status.success(), "{}", text(&o));
    let jobs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("cache/directord/jobs.json")).unwrap())
            .unwrap();
    let sha = jobs.as_object().unwrap().keys().next().unwrap().clone();
    let stream = |s: &str| {
        output(
            ingot(d.path())
                .args(["exec", "--stream", "--name", "m1", "--verb", "JOB_WAIT"])
                .arg("--minion")
                .arg(&m)
                .arg(s),
        )
    };
    let o = stream(&format!("--timeout 5 --identity m1 {sha}"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("STDOUT: m1 = job {sha} completed on m1")),
        "{out}"
    );
    // Another identity cannot be checked from here: said so, naming it, at once.
    let started = Instant::now();
    let o = stream(&format!("--identity m1 elsewhere {sha}"));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("without a master only this minion (m1) can be checked")
            && out.contains("--identity also names elsewhere"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// Verbs that drive real system tools: CONTAINER_IMAGE and POD against a private podman API
// service (its own storage in a temp dir, never the machine's), APT against the machine's
// apt-get without installing or removing anything.

/// `ingot exec --stream`: each job's STDOUT and STDERR are printed too.
fn exec_stream(dir: &Path, m: &Path, verb: &str, s: &str) -> Output {
    output(
        ingot(dir)
            .args([
                "exec", "--stream", "--name", "m1", "--verb", verb, "--minion",
            ])
            .arg(m)
            .arg(s),
    )
}

/// The JSON a streamed job printed as its (one-line) stdout.
fn stdout_json(o: &Output) -> serde_json::Value {
    let out = text(o);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("STDOUT: m1 = "))
        .unwrap_or_else(|| panic!("no STDOUT in {out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Whether `tool --version` runs.
fn runs(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why the podman tests cannot run here, if they cannot.
fn podman_unavailable() -> Option<String> {
    for (tool, package) in [
        ("podman", "podman"),
        ("curl", "curl"),
        ("unshare", "util-linux"),
    ] {
        if !runs(tool) {
            return Some(format!("{tool} is missing (apt-get install {package})"));
        }
    }
    if !crate::util::running_as_root() {
        return Some("the podman tests run as root (as CI does)".into());
    }
    None
}

/// A static executable (no PT_INTERP program header), so it runs in an image without a libc.
fn static_elf(p: &Path) -> bool {
    let Ok(b) = std::fs::read(p) else {
        return false;
    };
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let at = phoff + i * size;
        b.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// A podman API service of its own: storage, run, tmp and network config dirs under
/// DIR/podman and its own containers.conf; when dropped it removes every pod and container it
/// made, then the service is stopped.
///
/// Two adjustments let containers run in a VM like the development one and change nothing
/// elsewhere: the default ulimits are low (podman's defaults are above the hard limits there,
/// and raising a hard limit needs CAP_SYS_RESOURCE, which that VM does not give; root is not
/// bound by RLIMIT_NPROC anyway), and on a hybrid cgroup host whose cgroup2 mount has
/// controllers (which crun refuses) the service runs in a private mount namespace without
/// /sys/fs/cgroup/unified.
struct Podman {
    sock: PathBuf,
    service: std::process::Child,
}

const IMAGE: &str = "localhost/ingot-test:1";

impl Podman {
    fn start(dir: &Path) -> Podman {
        let root = dir.join("podman");
        std::fs::create_dir_all(&root).unwrap();
        let conf = root.join("containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        let sock = root.join("api.sock");
        let hybrid = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
            .is_ok_and(|c| !c.trim().is_empty());
        let mut cmd = if hybrid {
            let mut c = std::process::Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg("umount /sys/fs/cgroup/unified && exec \"$@\"")
                .args(["sh", "podman"]);
            c
        } else {
            std::process::Command::new("podman")
        };
        let log = std::fs::File::create(root.join("service.log")).unwrap();
        cmd.arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .arg("--tmpdir")
            .arg(root.join("tmp"))
            .arg("--network-config-dir")
            .arg(root.join("networks"))
            .args(["--storage-driver", "vfs", "system", "service", "--time=0"])
            .arg(format!("unix://{}", sock.display()))
            .env("CONTAINERS_CONF", &conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let service = cmd.spawn().expect("podman system service starts");
        let mut p = Podman { sock, service };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.remote(&["version"]).status.success() {
            let exited = p.service.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the podman service did not answer ({exited:?}): {}",
                std::fs::read_to_string(root.join("service.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// `--socket-path SOCK` for the verbs.
    fn socket_opt(&self) -> String {
        format!("--socket-path {}", self.sock.display())
    }

    /// The podman CLI as a client of this service.
    fn remote(&self, args: &[&str]) -> Output {
        std::process::Command::new("podman")
            .arg("--remote")
            .arg("--url")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("podman runs")
    }

    /// Imports IMAGE from a tarball (no registry); with a static busybox, whether there is one,
    /// it can run things.
    fn import_image(&self, dir: &Path) -> bool {
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| static_elf(p));
        if let Some(b) = busybox {
            std::fs::copy(b, rootfs.join("bin/busybox")).unwrap();
            for tool in ["sh", "sleep", "echo", "true", "cat"] {
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(tool)).unwrap();
            }
        } else {
            std::fs::write(rootfs.join("hello"), "an image that runs nothing\n").unwrap();
        }
        let tar = dir.join("image.tar");
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        let o = self.remote(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            IMAGE,
        ]);
        assert!(
            o.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        busybox.is_some()
    }

    /// Why containers and pods cannot run here, if they cannot.
    fn cannot_run(&self, runnable_image: bool) -> Option<String> {
        if !runnable_image {
            return Some(
                "no static busybox for a runnable image (apt-get install busybox-static)".into(),
            );
        }
        let o = self.remote(&["run", "--rm", "--network", "none", IMAGE, "/bin/true"]);
        if !o.status.success() {
            return Some(format!(
                "podman cannot run a container here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        // A pod from kube YAML has an infra container, whose image podman builds around
        // catatonit.
        let o = self.remote(&["pod", "create", "--name", "probe"]);
        if !o.status.success() {
            return Some(format!(
                "podman cannot make a pod with an infra container (apt-get install catatonit): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        let _ = self.remote(&["pod", "rm", "--force", "probe"]);
        None
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.remote(&["pod", "rm", "--all", "--force", "--time", "0"]);
        let _ = self.remote(&["rm", "--all", "--force", "--time", "0"]);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.service.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.service.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.service.kill();
        let _ = self.service.wait();
    }
}

/// The repository tags `--list` printed.
fn listed_tags(o: &Output) -> Vec<String> {
    stdout_json(o)
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["RepoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

/// A temporary directory, a minion in it, a podman service of its own and the test image
/// imported (whether it can run), or `None` (said on stderr) where podman cannot be used.
fn podman_fixture() -> Option<(tempfile::TempDir, PathBuf, Podman, bool)> {
    if let Some(why) = podman_unavailable() {
        eprintln!("skipped: {why}");
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let p = Podman::start(d.path());
    let runnable = p.import_image(d.path());
    Some((d, m, p, runnable))
}

#[test]
fn container_image_lists_inspects_tags_and_reports_errors() {
    let Some((d, m, p, _)) = podman_fixture() else {
        return;
    };
    let s = p.socket_opt();
    let ci = |v: &str| exec_stream(d.path(), &m, "CONTAINER_IMAGE", &format!("{s} {v}"));

    let o = ci("--list");
    assert!(o.status.success(), "{}", text(&o));
    assert!(listed_tags(&o).contains(&IMAGE.to_owned()), "{}", text(&o));

    let o = ci(&format!("--inspect {IMAGE}"));
    assert!(o.status.success(), "{}", text(&o));
    let one = stdout_json(&o);
    assert!(one["RepoTags"].to_string().contains(IMAGE), "{one}");
    // Several images: one JSON array of their inspections.
    let o = ci(&format!(
        "--inspect {IMAGE} {}",
        one["Id"].as_str().unwrap()
    ));
    assert!(o.status.success(), "{}", text(&o));
    let both = stdout_json(&o);
    assert_eq!(both.as_array().map(Vec::len), Some(2), "{both}");
    assert_eq!(both[0]["Id"], one["Id"]);

    let o = ci(&format!("--tag {IMAGE} localhost/ingot-copy:2"));
    assert!(o.status.success(), "{}", text(&o));
    // A registry with a port and no tag: the tag is `latest`, the port stays in the name.
    let o = ci(&format!("--tag {IMAGE} localhost:5000/ingot-test"));
    assert!(o.status.success(), "{}", text(&o));
    // The same --list again is a cache hit (Directord caches it too), so --skip-cache.
    let o = ci("--skip-cache --list");
    assert!(o.status.success(), "{}", text(&o));
    let tags = listed_tags(&o);
    for want in [
        IMAGE,
        "localhost/ingot-copy:2",
        "localhost:5000/ingot-test:latest",
    ] {
        assert!(tags.contains(&want.to_owned()), "{want} not in {tags:?}");
    }

    let o = ci("--inspect nosuch");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("STDERR: m1 = ") && out.contains("nosuch: image not known"),
        "{out}"
    );
    // No registry answers on port 1: the pull fails although podman answers 200.
    let o = ci("--pull localhost:1/nosuch:1");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("connection refused"), "{out}");
    let o = ci("--list extra");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("--list takes no images"), "{}", text(&o));
}

/// Polls POD --inspect until the pod's State is `want`.
fn pod_state(d: &Path, m: &Path, s: &str, pod: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = exec_stream(d, m, "POD", &format!("{s} --skip-cache --inspect {pod}"));
        assert!(o.status.success(), "{}", text(&o));
        let state = stdout_json(&o)["State"].as_str().unwrap_or("").to_owned();
        if state == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod} is {state}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn pod_plays_inspects_execs_stops_starts_kills_and_removes_a_real_pod() {
    let Some((d, m, p, runnable)) = podman_fixture() else {
        return;
    };
    let cannot_run = p.cannot_run(runnable);
    let s = p.socket_opt();
    let pod = |v: &str| exec_stream(d.path(), &m, "POD", &format!("{s} {v}"));

    if let Some(why) = &cannot_run {
        // What needs no running container: a pod without infra made by the CLI.
        eprintln!("skipped: --play, --start, --stop, --exec-run: {why}");
        let o = p.remote(&["pod", "create", "--infra=false", "--name", "p1"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        pod_state(d.path(), &m, &s, "p1", "Created");
        let o = pod("--kill p1");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("no running containers"), "{}", text(&o));
    } else {
        let yaml = d.path().join("pod.yaml");
        std::fs::write(
            &yaml,
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  hostNetwork: true\n  containers:\n  - name: c1\n    image: {IMAGE}\n    command: [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1; done\"]\n"
            ),
        )
        .unwrap();
        let o = pod(&format!("--play {}", yaml.display()));
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(stdout_json(&o)["Pods"].as_array().map(Vec::len), Some(1));
        pod_state(d.path(), &m, &s, "p1", "Running");

        // A command as one quoted string (split like a shell) or as words (as Directord).
        let o = pod(
            "--exec-run p1-c1 --env GREETING=hello,WHO=pod --command \"/bin/sh -c 'echo $GREETING from the $WHO'\"",
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("STDOUT: m1 = hello from the pod\n"),
            "{}",
            text(&o)
        );
        let o = pod("--exec-run p1-c1 --command echo two words");
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("STDOUT: m1 = two words\n"),
            "{}",
            text(&o)
        );
        // The command's exit status is the job's outcome.
        let o = pod("--exec-run p1-c1 --command \"/bin/sh -c 'echo failing; exit 3'\"");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("exited with 3"), "{}", text(&o));
        let o = pod("--exec-run nosuch --command true");
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("no container with name or ID"),
            "{}",
            text(&o)
        );

        let started = Instant::now();
        let o = pod("--timeout 60 --stop p1");
        assert!(o.status.success(), "{}", text(&o));
        assert!(started.elapsed() < Duration::from_secs(30));
        pod_state(d.path(), &m, &s, "p1", "Exited");
        let o = pod("--start p1");
        assert!(o.status.success(), "{}", text(&o));
        pod_state(d.path(), &m, &s, "p1", "Running");
        let o = pod("--kill p1");
        assert!(o.status.success(), "{}", text(&o));
        pod_state(d.path(), &m, &s, "p1", "Exited");
    }

    let o = pod("--rm p1 --force");
    assert!(o.status.success(), "{}", text(&o));
    let o = pod("--skip-cache --inspect p1");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no pod with name or ID p1 found"),
        "{}",
        text(&o)
    );
    let o = pod("--kill nosuch");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no pod with name or ID nosuch found"),
        "{}",
        text(&o)
    );
    let o = pod(&format!(
        "--play {}",
        d.path().join("missing.yaml").display()
    ));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("missing.yaml"), "{}", text(&o));
    let o = exec_stream(
        d.path(),
        &m,
        "POD",
        &format!(
            "--socket-path {} --inspect p1",
            d.path().join("no.sock").display()
        ),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no podman API socket at"), "{}", text(&o));
}

/// Why the APT test cannot run here, if it cannot.
fn apt_unavailable() -> Option<String> {
    if !runs("apt-get") || !runs("dpkg-query") {
        return Some("apt-get or dpkg-query is missing (not a Debian-family system)".into());
    }
    if !crate::util::running_as_root() {
        return Some("apt-get needs root (as CI runs)".into());
    }
    None
}

/// Whether dpkg lists the package as installed.
fn dpkg_installed(pkg: &str) -> bool {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.get(1) == Some(&b'i'))
}

#[test]
fn apt_removes_absent_packages_keeps_installed_ones_and_names_unknown_ones() {
    if let Some(why) = apt_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let apt = |v: &str| exec_stream(d.path(), &m, "APT", v);

    // Nothing here is installed, so nothing is removed. A name apt cannot locate is as
    // absent as can be (apt-get itself would fail on it); `sl`, which apt knows from the
    // package lists CI fetches, goes to a real `apt-get remove`, only when it is not installed.
    let mut absent = vec!["ingot-no-such-package-xyz"];
    let sl_known = std::process::Command::new("apt-cache")
        .args(["policy", "sl"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if !dpkg_installed("sl") {
        absent.push("sl");
    }
    let o = apt(&format!("--absent {}", absent.join(" ")));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("=== apt-get remove ===")
            && out.contains("ingot-no-such-package-xyz is unknown to apt, so not installed"),
        "{out}"
    );
    if sl_known && absent.contains(&"sl") {
        assert!(
            out.contains("Package 'sl' is not installed, so not removed"),
            "{out}"
        );
    }

    // Installed already: --no-upgrade, nothing downloaded.
    assert!(dpkg_installed("coreutils"));
    let o = apt("coreutils");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("coreutils"), "{out}");
    assert!(
        !out.contains("Need to get") && !out.contains("Get:"),
        "{out}"
    );

    let o = apt("--retry 1 ingot-no-such-package-xyz");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("STDERR: m1 = ")
            && out.contains("Unable to locate package ingot-no-such-package-xyz"),
        "{out}"
    );
}

// DNF without repositories, FACTER for real.

#[test]
fn dnf_without_repositories_removes_nothing_and_fails_to_install_with_its_own_error() {
    if !runs("dnf") {
        eprintln!("skipped: dnf is missing");
        return;
    }
    if !crate::util::running_as_root() {
        eprintln!("skipped: dnf needs root (as CI runs)");
        return;
    }
    let repos = [
        "/etc/yum.repos.d",
        "/etc/yum/repos.d",
        "/etc/distro.repos.d",
    ];
    if repos
        .iter()
        .any(|r| std::fs::read_dir(r).is_ok_and(|mut d| d.next().is_some()))
    {
        // With repositories the install could download; these commands must change nothing.
        eprintln!("skipped: dnf has repositories configured on this machine");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let dnf = |v: &str| exec_stream(d.path(), &m, "DNF", v);

    // Nothing by that name is installed, so nothing is removed: dnf succeeds.
    let o = dnf("--absent ingot-no-such-package");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("=== dnf remove ==="), "{out}");

    // Installing needs a repository; dnf says there is none, and the job fails with that.
    let o = dnf("--retry 1 ingot-no-such-package");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("=== dnf install ===")
            && out.contains("STDERR: m1 = ")
            && out.contains("There are no enabled repositories"),
        "{out}"
    );
}

/// What `facter --json [ARGS]` prints here (it may exit 1 over a fact it cannot resolve).
fn facter_json(args: &[&str]) -> serde_json::Value {
    let o = std::process::Command::new("facter")
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)))
}

#[test]
fn facter_stores_real_facts_that_later_jobs_render() {
    if !runs("facter") {
        eprintln!("skipped: facter is missing");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let facts = d.path().join("facts");
    std::fs::create_dir(&facts).unwrap();
    std::fs::write(
        facts.join("ingot.rb"),
        "Facter.add(:ingot_custom) do\n  setcode { 'hello-ingot' }\nend\n",
    )
    .unwrap();
    let real = facter_json(&[]);
    let kernel = real["kernel"].as_str().unwrap().to_owned();
    let os = real["os"]["name"].as_str().unwrap().to_owned();

    let f = d.path().join("out");
    let yaml = d.path().join("o.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- jobs:\n  - FACTER: --custom-dir {}\n  - RUN: echo \"{{{{ facter.kernel }}}} {{{{ facter.os.name }}}} {{{{ facter.ingot_custom }}}}\" > {}\n",
            facts.display(),
            f.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{kernel} {os} hello-ingot\n")
    );

    // On its own: the job prints facter's (pretty) JSON, the facts facter reports.
    let o = exec_stream(d.path(), &m, "FACTER", "");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("\"kernel\": \"{kernel}\"")), "{out}");
}

// SERVICE against a systemctl of the test's own (no systemd in a container or on CI).

#[test]
fn service_calls_systemctl_in_order_and_retries_failures() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let bin = d.path().join("bin");
    let calls = d.path().join("calls");
    crate::util::script(
        &bin.join("systemctl"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> {}\ncase \" $* \" in *\" broken \"*) echo \"Failed to $1 broken.service: Unit broken.service not found.\" >&2; exit 5;; esac\necho \"$1 done\"\n",
            calls.display()
        ),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let service = |s: &str| {
        output(
            ingot(d.path())
                .env("PATH", &path)
                .args(["exec", "--stream", "--name", "m1", "--verb", "SERVICE"])
                .arg("--minion")
                .arg(&m)
                .arg(s),
        )
    };
    let take_calls = || {
        let c = std::fs::read_to_string(&calls).unwrap_or_default();
        let _ = std::fs::remove_file(&calls);
        c
    };

    // daemon-reload first, then the state change, then the running state.
    let o = service("--daemon-reload --enable --restarted nginx sshd");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert_eq!(
        take_calls(),
        "daemon-reload\nenable nginx sshd\nrestart nginx sshd\n"
    );
    assert!(
        out.contains("=== systemctl enable ===") && out.contains("restart done"),
        "{out}"
    );

    // No running-state flag means start.
    let o = service("nginx");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(take_calls(), "start nginx\n");

    // A failing call is retried --retry times, stops the job before the running state and
    // shows systemctl's own message.
    let o = service("--retry 2 --disable --stopped broken");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert_eq!(take_calls(), "disable broken\ndisable broken\n");
    assert!(out.contains("Failed to disable broken.service"), "{out}");
}
