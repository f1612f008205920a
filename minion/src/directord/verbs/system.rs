//! The system verbs: SERVICE (systemd units; the executable `service_verb`, next to the
//! mold-style `service` resource), REBOOT, SECONTEXT (SELinux file contexts) and FACTER. Each
//! starts programs, so each runs in its own process.

use serde_json::{json, Map, Value};

use super::support::{detach, have, prog, retry, sections, Ctx, JobOutput};
use super::verb::{Traits, Verb};
use crate::directord::syntax::{OptSpec, OptType, VerbSpec};

/// The SERVICE verb (`resources/service_verb`).
pub const SERVICE: Verb = Verb {
    kind: "service_verb",
    verb: "SERVICE",
    spec: service_spec,
    exec: service_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

/// The REBOOT verb (`resources/reboot`).
pub const REBOOT: Verb = Verb {
    kind: "reboot",
    verb: "REBOOT",
    spec: reboot_spec,
    exec: reboot_exec,
    in_process: false,
    here: None,
    traits: Traits::REBOOTS,
};

/// The SECONTEXT verb (`resources/secontext`).
pub const SECONTEXT: Verb = Verb {
    kind: "secontext",
    verb: "SECONTEXT",
    spec: secontext_spec,
    exec: secontext_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

/// The FACTER verb (`resources/facter`).
pub const FACTER: Verb = Verb {
    kind: "facter",
    verb: "FACTER",
    spec: facter_spec,
    exec: facter_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

fn service_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage services with systemd (daemon-reload, mask/unmask, enable/disable, then start/restart/stop/reload).",
        vec![
            OptSpec::flag("reloaded", "--reloaded", "Reload the services."),
            OptSpec::flag("restarted", "--restarted", "Restart the services."),
            OptSpec::flag("stopped", "--stopped", "Stop the services."),
            OptSpec::flag("daemon_reload", "--daemon-reload", "Run systemctl daemon-reload first (combinable with a state change)."),
            OptSpec::flag("enable", "--enable", "Enable the services."),
            OptSpec::flag("disable", "--disable", "Disable the services."),
            OptSpec::flag("mask", "--mask", "Mask the services."),
            OptSpec::flag("unmask", "--unmask", "Unmask the services."),
            OptSpec::opt("retry", "--retry", OptType::Int, "Number of times to retry.").default(json!(3)),
            OptSpec::pos("services", OptType::Str, Some("+"), "the services"),
        ],
    )
    .group("running", &["reloaded", "restarted", "stopped"], false)
    .group("state", &["enable", "disable", "mask", "unmask"], false)
}

fn service_exec(c: &Ctx) -> JobOutput {
    let envs = c.env_pairs();
    let services = c.list("services");
    let n = c.i("retry", 3);
    let mut parts = Vec::new();
    let systemctl = |verb: &str| {
        let mut a = vec![verb.to_owned()];
        a.extend(services.iter().cloned());
        retry(n, || prog("systemctl", &a, &envs))
    };
    if c.b("daemon_reload") {
        let r = prog("systemctl", &["daemon-reload".into()], &envs);
        let ok = r.ok;
        parts.push(("systemctl daemon-reload".to_owned(), r));
        if !ok {
            return sections(parts);
        }
    }
    for (flag, verb) in [
        ("mask", "mask"),
        ("unmask", "unmask"),
        ("enable", "enable"),
        ("disable", "disable"),
    ] {
        if c.b(flag) {
            let r = systemctl(verb);
            let ok = r.ok;
            parts.push((format!("systemctl {verb}"), r));
            if !ok {
                return sections(parts);
            }
        }
    }
    let action = if c.b("restarted") {
        "restart"
    } else if c.b("stopped") {
        "stop"
    } else if c.b("reloaded") {
        "reload"
    } else {
        "start"
    };
    parts.push((format!("systemctl {action}"), systemctl(action)));
    sections(parts)
}

fn reboot_spec() -> VerbSpec {
    VerbSpec::new(
        "Reboot the minion after TIME seconds (default 10); the master marks it inactive until it reconnects.",
        vec![OptSpec::pos("time", OptType::Int, Some("?"), "seconds to wait").default(json!(10))],
    )
    .uncached()
}

fn reboot_exec(c: &Ctx) -> JobOutput {
    let cmd = format!(
        "sleep {}; systemctl --message='Directord reboot instruction' reboot",
        c.i("time", 10)
    );
    match detach(&cmd, &c.env_pairs()) {
        Ok(()) => JobOutput::ok("").info(cmd),
        Err(e) => JobOutput::fail(format!("cannot start the reboot: {e}")).info(cmd),
    }
}

fn secontext_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage SELinux file contexts (semanage fcontext).",
        vec![
            OptSpec::opt("ftype", "--ftype", OptType::Str, "File type.")
                .choices(&["a", "b", "c", "d", "f", "l", "p", "s"]),
            OptSpec::flag(
                "reload",
                "--reload",
                "Apply the context to existing files (restorecon -R).",
            ),
            OptSpec::opt("selevel", "--selevel", OptType::Str, "SELinux level.")
                .default(json!("s0")),
            OptSpec::opt("setype", "--setype", OptType::Str, "SELinux type.").required(),
            OptSpec::opt("seuser", "--seuser", OptType::Str, "SELinux user.")
                .default(json!("system_u")),
            OptSpec::pos(
                "target",
                OptType::Str,
                None,
                "the path or regular expression",
            ),
        ],
    )
}

fn secontext_exec(c: &Ctx) -> JobOutput {
    if !have("semanage") {
        return JobOutput::fail(
            "semanage is not installed (policycoreutils-python-utils); SECONTEXT needs it",
        );
    }
    let target = c.s("target").unwrap_or_default().to_owned();
    let envs = c.env_pairs();
    let mut base = vec![
        "fcontext".to_owned(),
        "-t".into(),
        c.s("setype").unwrap_or_default().into(),
        "-s".into(),
        c.s("seuser").unwrap_or("system_u").into(),
        "-r".into(),
        c.s("selevel").unwrap_or("s0").into(),
    ];
    if let Some(f) = c.s("ftype") {
        base.extend(["-f".into(), f.into()]);
    }
    let mut add = base.clone();
    add.insert(1, "-a".into());
    add.push(target.clone());
    let mut r = prog("semanage", &add, &envs);
    if !r.ok && r.stderr.contains("already defined") {
        let mut m = base;
        m.insert(1, "-m".into());
        m.push(target.clone());
        r = prog("semanage", &m, &envs);
    }
    if r.ok && c.b("reload") {
        let rr = prog("restorecon", &["-R".into(), target.clone()], &envs);
        if !rr.ok {
            return JobOutput {
                stdout: r.stdout,
                ..JobOutput::fail(rr.stderr)
            };
        }
    }
    JobOutput {
        outcome: r.ok,
        stdout: r.stdout,
        stderr: r.stderr,
        info: target,
        ..JobOutput::default()
    }
}

fn facter_spec() -> VerbSpec {
    VerbSpec::new(
        "Run facter and store its facts in the `facter` arg.",
        vec![
            OptSpec::opt(
                "custom_dir",
                "--custom-dir",
                OptType::Str,
                "A directory of custom facts.",
            ),
            OptSpec::opt(
                "external_dir",
                "--external-dir",
                OptType::Str,
                "A directory of external facts.",
            ),
        ],
    )
}

fn facter_exec(c: &Ctx) -> JobOutput {
    if !have("facter") {
        return JobOutput::fail(
            "Facter is not installed! Install the facter package on the minion.",
        );
    }
    let mut a = vec!["--json".to_owned()];
    if let Some(d) = c.s("custom_dir") {
        a.extend(["--custom-dir".into(), d.into()]);
    }
    if let Some(d) = c.s("external_dir") {
        a.extend(["--external-dir".into(), d.into()]);
    }
    let r = prog("facter", &a, &c.env_pairs());
    // Facter 4 exits 1 when it logged any error, even one fact it could not resolve (in a
    // container: reading /proc/1/environ), yet still prints every other fact. Facts printed
    // are facts to store; its errors stay in stderr.
    match serde_json::from_str::<Value>(&r.stdout) {
        Ok(v @ Value::Object(_)) => {
            let mut m = Map::new();
            m.insert("facter".into(), v);
            JobOutput {
                set_args: Some(m),
                stderr: r.stderr,
                ..JobOutput::ok(r.stdout)
            }
        }
        _ if !r.ok => JobOutput {
            stdout: r.stdout,
            ..JobOutput::fail(r.stderr)
        },
        Ok(_) => JobOutput::fail("facter printed JSON that is not an object of facts"),
        Err(e) => JobOutput::fail(format!("facter printed invalid JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directord::syntax::{parse, Parsed};
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    #[test]
    fn reboot_defaults_to_ten_seconds_and_runs_directords_command() {
        let fields = match parse(&reboot_spec(), "REBOOT", "", &Map::new()).unwrap() {
            Parsed::Fields(f) => f,
            Parsed::Help(h) => panic!("help: {h}"),
        };
        assert_eq!(fields["time"], json!(10));

        // Never a real reboot: a `systemctl` first on the PATH (given as a cached ENV, which
        // the command gets) records its arguments.
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("args");
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}.tmp && mv {0}.tmp {0}\n",
                record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut job = fields;
        job.insert("time".into(), json!(0));
        let mut envs = Map::new();
        envs.insert(
            "PATH".into(),
            json!(format!("{}:/usr/bin:/bin", bin.display())),
        );
        let ctx = Ctx {
            job,
            args: Map::new(),
            envs,
            cache_dir: None,
            source: None,
        };
        let out = reboot_exec(&ctx);
        assert!(out.outcome, "{out:?}");
        assert_eq!(
            out.info,
            "sleep 0; systemctl --message='Directord reboot instruction' reboot"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let args = loop {
            if let Ok(a) = std::fs::read_to_string(&record) {
                break a;
            }
            assert!(Instant::now() < deadline, "systemctl was not run");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(args, "--message=Directord reboot instruction\nreboot\n");
    }
}
