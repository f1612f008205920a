//! The package verbs: DNF and APT. They start the package tools, so each runs in its own
//! process, which `--timeout` can kill.

use serde_json::json;

use super::support::{prog, retry, sections, Ctx, JobOutput, Ran};
use super::verb::{Traits, Verb};
use crate::directord::syntax::{OptSpec, OptType, VerbSpec};

/// The DNF verb (`resources/dnf`).
pub const DNF: Verb = Verb {
    kind: "dnf",
    verb: "DNF",
    spec: || pkg_spec("dnf"),
    exec: dnf_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

/// The APT verb (`resources/apt`).
pub const APT: Verb = Verb {
    kind: "apt",
    verb: "APT",
    spec: || pkg_spec("apt-get"),
    exec: apt_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

fn pkg_spec(tool: &str) -> VerbSpec {
    VerbSpec::new(
        &format!("Manage packages with {tool}."),
        vec![
            OptSpec::flag(
                "clear_metadata",
                "--clear-metadata",
                "Clear the package metadata (and refresh it) first.",
            ),
            OptSpec::opt(
                "exclude",
                "--exclude",
                OptType::Str,
                "Comma-separated packages to exclude.",
            ),
            OptSpec::flag(
                "latest",
                "--latest",
                "Install or upgrade to the latest version.",
            ),
            OptSpec::flag("absent", "--absent", "Remove the packages."),
            OptSpec::opt(
                "retry",
                "--retry",
                OptType::Int,
                "Number of times to retry.",
            )
            .default(json!(3)),
            OptSpec::pos("packages", OptType::Str, Some("+"), "the packages"),
        ],
    )
    .group("state", &["latest", "absent"], false)
}

fn dnf_exec(c: &Ctx) -> JobOutput {
    let envs = c.env_pairs();
    let mut parts = Vec::new();
    if c.b("clear_metadata") {
        let _ = prog("dnf", &["clean".into(), "all".into()], &envs);
        let _ = prog("dnf", &["makecache".into()], &envs);
    }
    let (title, mut args) = if c.b("absent") {
        ("dnf remove", vec!["-q".into(), "-y".into()])
    } else if c.b("latest") {
        (
            "dnf install",
            vec!["-q".into(), "-y".into(), "--best".into()],
        )
    } else {
        ("dnf install", vec!["-q".into(), "-y".into()])
    };
    if let Some(x) = c.s("exclude").filter(|s| !s.is_empty()) {
        args.push(format!("--exclude={x}"));
    }
    args.push(if c.b("absent") { "remove" } else { "install" }.into());
    args.extend(c.list("packages"));
    let r = retry(c.i("retry", 3), || prog("dnf", &args, &envs));
    parts.push((title.to_owned(), r));
    sections(parts)
}

/// What every apt-get call gets: no prompts, wait for another apt's lock instead of failing,
/// keep changed configuration files (as the `package` resource does).
const APT_GET_OPTS: &[&str] = crate::builtin::package::APT_OPTS;

/// Whether apt knows nothing of `pkg`, so it is not installed (apt knows every installed
/// package from dpkg's status) and `apt-get remove` would fail to locate it. A pattern, a
/// version or a release (`pkg*`, `pkg=1.2`, `pkg/stable`) is left to apt-get.
fn apt_unknown(pkg: &str, envs: &[(String, String)]) -> bool {
    if pkg.contains(['*', '?', '[', '=', '/', '~']) {
        return false;
    }
    let r = prog("apt-cache", &["policy".to_owned(), pkg.to_owned()], envs);
    r.ok && r.stdout.trim().is_empty()
}

fn apt_exec(c: &Ctx) -> JobOutput {
    let mut envs = c.env_pairs();
    envs.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
    let opts = || APT_GET_OPTS.iter().map(|o| (*o).to_owned());
    let mut parts = Vec::new();
    if c.b("clear_metadata") {
        let _ = prog("apt-get", &["clean".into()], &envs);
        parts.push((
            "apt-get update".to_owned(),
            prog(
                "apt-get",
                &opts().chain(["update".into()]).collect::<Vec<_>>(),
                &envs,
            ),
        ));
    }
    let excluded: Vec<String> = c
        .s("exclude")
        .map(|x| x.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut pkgs: Vec<String> = c
        .list("packages")
        .into_iter()
        .filter(|p| !excluded.contains(p))
        .collect();
    let mut already = String::new();
    if c.b("absent") {
        let (unknown, left): (Vec<String>, Vec<String>) =
            pkgs.into_iter().partition(|p| apt_unknown(p, &envs));
        for p in &unknown {
            already.push_str(&format!("{p} is unknown to apt, so not installed\n"));
        }
        pkgs = left;
        if pkgs.is_empty() {
            let none = Ran {
                ok: true,
                stdout: already,
                stderr: String::new(),
            };
            parts.push(("apt-get remove".to_owned(), none));
            return sections(parts);
        }
    }
    let (title, action): (&str, &[&str]) = if c.b("absent") {
        ("apt-get remove", &["remove"])
    } else if c.b("latest") {
        ("apt-get install", &["install"])
    } else {
        ("apt-get install", &["install", "--no-upgrade"])
    };
    let args: Vec<String> = opts()
        .chain(action.iter().map(|a| (*a).to_owned()))
        .chain(pkgs)
        .collect();
    let mut r = retry(c.i("retry", 3), || prog("apt-get", &args, &envs));
    r.stdout.insert_str(0, &already);
    parts.push((title.to_owned(), r));
    sections(parts)
}
