//! The container verbs: CONTAINER_IMAGE and POD, through podman's REST API (libpod, v4) over
//! its UNIX socket with curl. Each runs in its own process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::{ran, Ctx, JobOutput, Ran};
use super::verb::{Traits, Verb};
use crate::directord::syntax::{split_words, OptSpec, OptType, VerbSpec};

/// The CONTAINER_IMAGE verb (`resources/container_image`).
pub const CONTAINER_IMAGE: Verb = Verb {
    kind: "container_image",
    verb: "CONTAINER_IMAGE",
    spec: container_image_spec,
    exec: container_image_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

/// The POD verb (`resources/pod`).
pub const POD: Verb = Verb {
    kind: "pod",
    verb: "POD",
    spec: pod_spec,
    exec: pod_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

const PODMAN_SOCKET: &str = "/var/run/podman/podman.sock";

/// Percent-encodes `v` for a URL, keeping the unreserved characters and `keep`.
fn url_enc(v: &str, keep: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query value.
fn q(v: &str) -> String {
    url_enc(v, "")
}

/// A name in a path: an image name keeps its `/`, `:` and `@`.
fn seg(v: &str) -> String {
    url_enc(v, "/:@")
}

/// Runs curl, feeding `input` (a request body) on its stdin: a kube YAML can be larger than
/// one command-line argument may be.
fn curl(args: &[String], input: Option<&str>, envs: &[(String, String)]) -> Ran {
    use std::io::Write;
    let mut c = Command::new("curl");
    c.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return Ran {
                ok: false,
                stdout: String::new(),
                stderr: format!("cannot run curl (install curl on the minion): {e}"),
            }
        }
    };
    let feeder = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            }))
        }
        _ => None,
    };
    let out = child.wait_with_output();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    ran(out, "curl")
}

/// One call of podman's REST API (libpod, v4) over its UNIX socket. `body` is
/// `(CONTENT_TYPE, TEXT)`. A failure says podman's own message, then the call and status.
fn podman(c: &Ctx, method: &str, path: &str, body: Option<(&str, &str)>) -> JobOutput {
    let sock = c.s("socket_path").unwrap_or(PODMAN_SOCKET);
    if !Path::new(sock).exists() {
        return JobOutput::fail(format!(
            "no podman API socket at {sock}: start the service (`systemctl enable --now podman.socket`, or `podman system service --time=0 unix://{sock}`) or give --socket-path"
        ));
    }
    let mut a: Vec<String> = vec![
        "-sS".into(),
        "--unix-socket".into(),
        sock.into(),
        "-X".into(),
        method.into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if let Some((ctype, _)) = body {
        // Never a form type: podman would read the body as form fields.
        a.extend([
            "-H".into(),
            format!("Content-Type: {ctype}"),
            "--data-binary".into(),
            "@-".into(),
        ]);
    }
    a.push(format!("http://d/v4.0.0/libpod{path}"));
    let r = curl(&a, body.map(|(_, b)| b), &c.env_pairs());
    if !r.ok {
        return JobOutput::fail(format!("podman API at {sock}: {}", r.stderr.trim()));
    }
    let (text, code) = r.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let code: u32 = code.trim().parse().unwrap_or(0);
    if (200..400).contains(&code) {
        return JobOutput::ok(text);
    }
    let why = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    JobOutput::fail(format!(
        "{why} (podman API: {method} {path} answered {code})"
    ))
}

/// The error a pull or push reports inside its JSON stream: podman answers those 200 even
/// when they fail.
fn stream_error(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            v.get("error")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
        })
}

/// `--socket-path`, shared by CONTAINER_IMAGE and POD.
fn podman_socket_opt() -> OptSpec {
    OptSpec::opt(
        "socket_path",
        "--socket-path",
        OptType::Str,
        "The podman socket.",
    )
    .default(json!(PODMAN_SOCKET))
}

fn container_image_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage container images through the podman API.",
        vec![
            podman_socket_opt(),
            OptSpec::flag(
                "no_tlsverify",
                "--no-tlsverify",
                "Do not verify TLS for registries.",
            ),
            OptSpec::flag("pull", "--pull", "Pull the images."),
            OptSpec::flag("push", "--push", "Push the images."),
            OptSpec::flag("tag", "--tag", "Tag IMAGE as NEW_NAME[:TAG]."),
            OptSpec::flag("list", "--list", "List images."),
            OptSpec::flag("inspect", "--inspect", "Inspect the images."),
            OptSpec::pos("images", OptType::Str, Some("*"), "image names"),
        ],
    )
    .group("action", &["pull", "push", "tag", "list", "inspect"], true)
}

/// `NAME[:TAG]` split into repository and tag (default `latest`); a colon before the last
/// `/` is a registry's port, not a tag.
fn split_tag(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => (repo, tag),
        _ => (name, "latest"),
    }
}

fn container_image_exec(c: &Ctx) -> JobOutput {
    let images = c.list("images");
    let tls = !c.b("no_tlsverify");
    if c.b("list") {
        if !images.is_empty() {
            return JobOutput::fail(format!("--list takes no images (got {})", images.join(" ")));
        }
        return podman(c, "GET", "/images/json", None);
    }
    if c.b("tag") {
        let [src, new] = images.as_slice() else {
            return JobOutput::fail("--tag needs exactly two images: SOURCE NEW_NAME[:TAG]");
        };
        let (repo, tag) = split_tag(new);
        return podman(
            c,
            "POST",
            &format!("/images/{}/tag?repo={}&tag={}", seg(src), q(repo), q(tag)),
            None,
        );
    }
    if images.is_empty() {
        return JobOutput::fail("give at least one image");
    }
    let transfer = c.b("pull") || c.b("push");
    let mut outs = Vec::new();
    for img in &images {
        let r = if c.b("pull") {
            podman(
                c,
                "POST",
                &format!("/images/pull?reference={}&tlsVerify={tls}", q(img)),
                None,
            )
        } else if c.b("push") {
            podman(
                c,
                "POST",
                &format!("/images/{}/push?tlsVerify={tls}", seg(img)),
                None,
            )
        } else {
            podman(c, "GET", &format!("/images/{}/json", seg(img)), None)
        };
        if !r.outcome {
            return r;
        }
        if let Some(e) = transfer.then(|| stream_error(&r.stdout)).flatten() {
            return JobOutput {
                stdout: r.stdout,
                ..JobOutput::fail(format!("{img}: {e}"))
            };
        }
        outs.push(r.stdout);
    }
    if c.b("inspect") && outs.len() > 1 {
        // Several inspections are one JSON array, as in Directord.
        let all: Vec<Value> = outs
            .iter()
            .map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.clone())))
            .collect();
        return JobOutput::ok(Value::Array(all).to_string());
    }
    JobOutput::ok(
        outs.iter()
            .map(|o| o.trim_end())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn pod_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage pods through the podman API.",
        vec![
            podman_socket_opt(),
            OptSpec::opt(
                "env",
                "--env",
                OptType::Str,
                "KEY=VALUE,... for --exec-run.",
            ),
            OptSpec::opt(
                "command",
                "--command",
                OptType::Str,
                "The command for --exec-run: its words, or one quoted string split like a shell.",
            )
            .nargs("+"),
            OptSpec::flag("privileged", "--privileged", "Privileged --exec-run."),
            OptSpec::flag("no_tlsverify", "--no-tlsverify", "Do not verify TLS."),
            OptSpec::flag("force", "--force", "Force --rm."),
            OptSpec::opt(
                "kill_signal",
                "--kill-signal",
                OptType::Str,
                "Signal for --kill.",
            )
            .default(json!("SIGKILL")),
            OptSpec::opt("start", "--start", OptType::Str, "Start POD."),
            OptSpec::opt("stop", "--stop", OptType::Str, "Stop POD."),
            OptSpec::opt("rm", "--rm", OptType::Str, "Remove POD."),
            OptSpec::opt("kill", "--kill", OptType::Str, "Kill POD."),
            OptSpec::opt("inspect", "--inspect", OptType::Str, "Inspect POD."),
            OptSpec::opt("play", "--play", OptType::Str, "Play a kube YAML file."),
            OptSpec::opt(
                "exec_run",
                "--exec-run",
                OptType::Str,
                "Run --command in CONTAINER.",
            ),
        ],
    )
    .group(
        "action",
        &["start", "stop", "rm", "kill", "inspect", "play", "exec_run"],
        true,
    )
}

fn pod_exec(c: &Ctx) -> JobOutput {
    let t = c.i("timeout", 600).max(0);
    // How long podman lets a stopping container go before SIGKILL: short of the job's own
    // timeout, so a container that ignores SIGTERM is killed and the job still sees the end.
    let grace = t - (t / 2).min(10);
    let tls = if c.b("no_tlsverify") { "false" } else { "true" };
    if let Some(p) = c.s("start") {
        return podman(c, "POST", &format!("/pods/{}/start", seg(p)), None);
    }
    if let Some(p) = c.s("stop") {
        return podman(c, "POST", &format!("/pods/{}/stop?t={grace}", seg(p)), None);
    }
    if let Some(p) = c.s("rm") {
        return podman(
            c,
            "DELETE",
            &format!("/pods/{}?force={}", seg(p), c.b("force")),
            None,
        );
    }
    if let Some(p) = c.s("kill") {
        let sig = c.s("kill_signal").unwrap_or("SIGKILL");
        return podman(
            c,
            "POST",
            &format!("/pods/{}/kill?signal={}", seg(p), q(sig)),
            None,
        );
    }
    if let Some(p) = c.s("inspect") {
        return podman(c, "GET", &format!("/pods/{}/json", seg(p)), None);
    }
    if let Some(f) = c.s("play") {
        let body = match std::fs::read_to_string(f) {
            Ok(b) => b,
            Err(e) => return JobOutput::fail(format!("cannot read the kube YAML {f}: {e}")),
        };
        return podman(
            c,
            "POST",
            &format!("/play/kube?tlsVerify={tls}&start=true"),
            Some(("application/yaml", &body)),
        );
    }
    if let Some(ctr) = c.s("exec_run") {
        return exec_run(c, ctr);
    }
    JobOutput::fail("give one of --start, --stop, --rm, --kill, --inspect, --play, --exec-run")
}

/// POD --exec-run: an exec session in CONTAINER, its output, and its exit code as the outcome.
fn exec_run(c: &Ctx, ctr: &str) -> JobOutput {
    let mut cmd = c.list("command");
    if let [one] = cmd.as_slice() {
        match split_words("POD", one) {
            Ok(words) => cmd = words.into_iter().map(|w| w.text).collect(),
            Err(e) => return JobOutput::fail(e.to_string()),
        }
    }
    if cmd.is_empty() {
        return JobOutput::fail("--exec-run needs --command");
    }
    let env: Vec<String> = c
        .s("env")
        .map(|e| {
            e.split(',')
                .filter(|kv| !kv.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let body = json!({"Cmd": cmd, "Env": env, "Privileged": c.b("privileged"), "Tty": true,
                      "AttachStdout": true, "AttachStderr": true})
    .to_string();
    let created = podman(
        c,
        "POST",
        &format!("/containers/{}/exec", seg(ctr)),
        Some(("application/json", &body)),
    );
    if !created.outcome {
        return created;
    }
    let Some(id) = serde_json::from_str::<Value>(&created.stdout)
        .ok()
        .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_owned))
    else {
        return JobOutput::fail(format!("podman made no exec session: {}", created.stdout));
    };
    let ran = podman(
        c,
        "POST",
        &format!("/exec/{id}/start"),
        Some(("application/json", "{\"Detach\": false, \"Tty\": true}")),
    );
    if !ran.outcome {
        return ran;
    }
    // A terminal ends lines with \r\n.
    let out = ran.stdout.replace("\r\n", "\n");
    // podman answers 200 whatever the command did; the session has its exit code.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let s = podman(c, "GET", &format!("/exec/{id}/json"), None);
        if !s.outcome {
            return JobOutput { stdout: out, ..s };
        }
        let v: Value = serde_json::from_str(&s.stdout).unwrap_or(Value::Null);
        if v["Running"] != Value::Bool(true) || Instant::now() >= deadline {
            break v["ExitCode"].as_i64();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match code {
        Some(0) => JobOutput::ok(out),
        Some(n) => JobOutput {
            stdout: out,
            ..JobOutput::fail(format!("`{}` exited with {n} in {ctr}", cmd.join(" ")))
        },
        None => JobOutput {
            stdout: out,
            ..JobOutput::fail(format!(
                "podman reported no exit code for exec session {id}"
            ))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directord::syntax::{parse, Parsed};
    use serde_json::Map;

    #[test]
    fn image_tags_split_after_the_registry_port() {
        assert_eq!(split_tag("localhost/a:2"), ("localhost/a", "2"));
        assert_eq!(split_tag("localhost/a"), ("localhost/a", "latest"));
        assert_eq!(
            split_tag("localhost:5000/a"),
            ("localhost:5000/a", "latest")
        );
        assert_eq!(split_tag("localhost:5000/a:b"), ("localhost:5000/a", "b"));
        assert_eq!(q("SIG KILL&x"), "SIG%20KILL%26x");
        assert_eq!(seg("quay.io/a/b:1"), "quay.io/a/b:1");
    }

    #[test]
    fn pod_command_takes_words_or_one_string() {
        let fields = |s: &str| match parse(&pod_spec(), "POD", s, &Map::new()).unwrap() {
            Parsed::Fields(f) => f,
            Parsed::Help(h) => panic!("help: {h}"),
        };
        let f = fields("--exec-run c1 --command echo two words");
        assert_eq!(f["command"], json!(["echo", "two", "words"]));
        let f = fields("--exec-run c1 --command \"sh -c 'echo hi'\"");
        assert_eq!(f["command"], json!(["sh -c 'echo hi'"]));
    }
}
