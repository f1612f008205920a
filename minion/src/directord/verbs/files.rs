//! The file verbs: WORKDIR (a directory) and ADD/COPY (a file from the operator's host, whose
//! content the engine fetches: [`Traits::TRANSFER`]). They start no programs, so they run
//! in-process.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::support::{Ctx, JobOutput};
use super::verb::{Traits, Verb};
use crate::directord::cache::write_atomic;
use crate::directord::job::file_sha3;
use crate::directord::syntax::{OptSpec, OptType, VerbSpec};
use crate::directord::template;

/// The ADD verb (`resources/add`).
pub const ADD: Verb = Verb {
    kind: "add",
    verb: "ADD",
    spec: transfer_spec,
    exec: transfer_exec,
    in_process: true,
    here: None,
    traits: Traits::TRANSFER,
};

/// The COPY verb (`resources/copy`).
pub const COPY: Verb = Verb {
    kind: "copy",
    verb: "COPY",
    spec: transfer_spec,
    exec: transfer_exec,
    in_process: true,
    here: None,
    traits: Traits::TRANSFER,
};

/// The WORKDIR verb (`resources/workdir`).
pub const WORKDIR: Verb = Verb {
    kind: "workdir",
    verb: "WORKDIR",
    spec: workdir_spec,
    exec: workdir_exec,
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

fn chown_opts() -> Vec<OptSpec> {
    vec![
        OptSpec::opt(
            "chown",
            "--chown",
            OptType::Str,
            "Set the ownership: user[:group], names or ids.",
        ),
        OptSpec::opt(
            "chmod",
            "--chmod",
            OptType::Str,
            "Set the mode, octal (e.g. 0755).",
        ),
    ]
}

fn workdir_spec() -> VerbSpec {
    let mut o = chown_opts();
    o.push(OptSpec::pos(
        "workdir",
        OptType::Str,
        None,
        "the directory (blueprinted)",
    ));
    VerbSpec::new("Process workdir commands: create a directory.", o)
}

fn chown_chmod(path: &Path, c: &Ctx) -> Result<(), String> {
    if let Some(own) = c.s("chown").filter(|s| !s.is_empty()) {
        let (u, g) = match own.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (own, None),
        };
        let uid = resolve_user(u)?;
        let gid = g.map(resolve_group).transpose()?;
        nix::unistd::chown(path, Some(uid), gid)
            .map_err(|e| format!("chown {own} {}: {e}", path.display()))?;
    }
    if let Some(mode) = c.s("chmod").filter(|s| !s.is_empty()) {
        let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .map_err(|_| format!("--chmod {mode:?} is not an octal mode such as 0755"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))
            .map_err(|e| format!("chmod {mode} {}: {e}", path.display()))?;
    }
    Ok(())
}

fn resolve_user(u: &str) -> Result<nix::unistd::Uid, String> {
    runner::uid_of(u).ok_or_else(|| format!("--chown: no user {u:?} on this minion"))
}

fn resolve_group(g: &str) -> Result<nix::unistd::Gid, String> {
    runner::gid_of(g).ok_or_else(|| format!("--chown: no group {g:?} on this minion"))
}

fn workdir_exec(c: &Ctx) -> JobOutput {
    let dir = match c.render("the directory", c.s("workdir").unwrap_or_default()) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if dir.is_empty() {
        return JobOutput::fail("WORKDIR needs a path");
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return JobOutput::fail(format!("cannot create {dir}: {e}"));
    }
    if let Err(e) = chown_chmod(Path::new(&dir), c) {
        return JobOutput::fail(e);
    }
    JobOutput::ok(format!("Directory {dir} OK")).info(dir)
}

fn transfer_spec() -> VerbSpec {
    let mut o = chown_opts();
    o.push(OptSpec::flag(
        "blueprint",
        "--blueprint",
        "Instruct the remote file to be blueprinted.",
    ));
    o.push(OptSpec::pos(
        "from",
        OptType::Str,
        None,
        "the source: a file or glob on the operator's host, relative to the working directory",
    ));
    o.push(OptSpec::pos(
        "to",
        OptType::Str,
        None,
        "the destination (a directory when it ends with /; blueprinted)",
    ));
    // `transfer` comes from the declaration (`Traits::TRANSFER`).
    VerbSpec::new(
        "Process transfer commands: copy files from the operator's host.",
        o,
    )
}

fn transfer_exec(c: &Ctx) -> JobOutput {
    let from = c.s("file_from").unwrap_or_default();
    let want = c.s("file_sha3_224").unwrap_or_default();
    let to = match c.render("the destination", c.s("file_to").unwrap_or_default()) {
        Ok(t) => t,
        Err(e) => return e,
    };
    if to.is_empty() {
        return JobOutput::fail("ADD/COPY needs a destination");
    }
    let source = c.source.clone().unwrap_or_else(|| PathBuf::from(from));
    let dest = PathBuf::from(&to);
    let blueprint = c.b("blueprint");
    let mut note = String::new();
    let same = file_sha3(&dest).map(|h| h == want).unwrap_or(false);
    if same {
        note = format!("File exists {to} and has the content of {from}; nothing to transfer\n");
    } else {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(parent) {
                return JobOutput::fail(format!("cannot create {}: {e}", parent.display()));
            }
        }
        if let Err(e) = copy_checked(&source, &dest, (!blueprint).then_some(want)) {
            return JobOutput::fail(e);
        }
        // write_atomic makes the file 0600; give it an ordinary mode unless --chmod says.
        let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644));
    }
    if blueprint {
        if c.args.is_empty() {
            return JobOutput::fail("No arguments were defined for blueprinting");
        }
        let text = match std::fs::read_to_string(&dest) {
            Ok(t) => t,
            Err(e) => return JobOutput::fail(format!("cannot read {to} to blueprint it: {e}")),
        };
        let rendered = match template::render(&format!("the file {to}"), &text, &c.args) {
            Ok(r) => r,
            Err(e) => return JobOutput::fail(e.to_string()),
        };
        if let Err(e) = write_atomic(&dest, rendered.as_bytes()) {
            return JobOutput::fail(format!("cannot write {to}: {e}"));
        }
        let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644));
    }
    if let Err(e) = chown_chmod(&dest, c) {
        return JobOutput::fail(e);
    }
    // Unless blueprinted, the destination's content was just checked to be the source's.
    let sha = if blueprint {
        file_sha3(&dest).unwrap_or_default()
    } else {
        want.to_owned()
    };
    JobOutput {
        stderr: note,
        ..JobOutput::ok(sha).info(from)
    }
}

/// Copies `src` to `dest` through a temporary file and a rename, hashing on the way (the
/// content is never held in memory whole); with `want`, content whose SHA3-224 differs is not
/// installed ("Data integrity failure").
fn copy_checked(src: &Path, dest: &Path, want: Option<&str>) -> Result<(), String> {
    use sha3::{Digest, Sha3_224};
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut from = std::fs::File::open(src)
        .map_err(|e| format!("cannot read the source {}: {e}", src.display()))?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        dest.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let cannot_write = |e: std::io::Error| format!("cannot write {}: {e}", dest.display());
    let copied = (|| {
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(cannot_write)?;
        let mut h = Sha3_224::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from
                .read(&mut buf)
                .map_err(|e| format!("cannot read the source {}: {e}", src.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            to.write_all(&buf[..n]).map_err(cannot_write)?;
        }
        if let Some(want) = want {
            let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if got != want {
                return Err(format!(
                    "Data integrity failure: {} changed since the job was made (expected SHA3-224 {want}, found {got}); run the job again",
                    src.display()
                ));
            }
        }
        to.sync_all().map_err(cannot_write)?;
        std::fs::rename(&tmp, dest).map_err(cannot_write)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}
