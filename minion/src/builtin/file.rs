//! The built-in `file` resource: a regular file, directory, symlink, or nothing at a path.
//!
//! Desired state: `path` (identity, absolute); `type` (`file`, `directory`, `symlink` or
//! `absent`; implied by `content`/`content_base64` (file) or `target` (symlink)); `exists`
//! (`false` is the same as `type: absent`); `content` or `content_base64`; `owner`, `group`
//! (names or numeric ids); `mode` (octal string, reported as four digits such as `"0640"`);
//! `target` (symlink target); `parents` (create missing parent directories); `force` (replace
//! a directory or special file of the wrong type, remove a non-empty directory).
//!
//! A state with only `path` asserts nothing: inspect reports what is there without `changes`;
//! conform creates an empty regular file when nothing is there.
//!
//! Inspect reports `type`, `size` and `sha256` (regular files), `owner`, `group`, `mode` (not
//! for symlinks), `target` (symlinks), and — whenever the given state has fields besides
//! `path` — `changes` `{FIELD: {"observed", "desired"}}` (empty when it is in the desired
//! state; content is compared by `sha256:` digests). Conform writes files atomically (a
//! temporary file in the same directory, fsync, rename, fsync of the directory) and changes
//! nothing when the file is already as desired.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Resource, ResourceError};

/// The `file` resource.
pub struct File;

/// What the desired state asks for at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Absent,
    File,
    Dir,
    Link,
    /// Only "something exists" (no type-specific field given).
    Any,
}

impl Want {
    fn name(self) -> &'static str {
        match self {
            Want::Absent => "absent",
            Want::File => "file",
            Want::Dir => "directory",
            Want::Link => "symlink",
            Want::Any => "any",
        }
    }
}

/// The desired state, parsed and checked.
struct Desired {
    path: PathBuf,
    want: Want,
    /// Which field the content came from (`content` or `content_base64`) and its bytes.
    content: Option<(&'static str, Vec<u8>)>,
    owner: Option<(Value, u32)>,
    group: Option<(Value, u32)>,
    mode: Option<u32>,
    target: Option<String>,
    parents: bool,
    force: bool,
    /// Fields besides `path` were given, so inspect reports `changes`.
    has_fields: bool,
}

/// Files up to this size report their text as `content` when the desired state has one.
const OBSERVED_CONTENT_MAX: u64 = 64 * 1024;

fn io_err(path: &Path, source: io::Error) -> ResourceError {
    ResourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn resolve_user(v: &Value) -> Result<u32, ResourceError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ResourceError::input("/owner", "a uid must be a non-negative integer")),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map_err(|_| ResourceError::input("/owner", format!("uid {s} is out of range"))),
        Value::String(s) => match nix::unistd::User::from_name(s) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            Ok(None) => Err(ResourceError::input(
                "/owner",
                format!(
                    "no such user {s:?}; create it first (the user resource) or give a numeric uid"
                ),
            )),
            Err(e) => Err(ResourceError::Failed(format!("looking up user {s:?}: {e}"))),
        },
        _ => Err(ResourceError::input(
            "/owner",
            "expected a user name or uid",
        )),
    }
}

fn resolve_group(v: &Value) -> Result<u32, ResourceError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ResourceError::input("/group", "a gid must be a non-negative integer")),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse()
            .map_err(|_| ResourceError::input("/group", format!("gid {s} is out of range"))),
        Value::String(s) => match nix::unistd::Group::from_name(s) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => Err(ResourceError::input(
                "/group",
                format!("no such group {s:?}; create it first (the group resource) or give a numeric gid"),
            )),
            Err(e) => Err(ResourceError::Failed(format!("looking up group {s:?}: {e}"))),
        },
        _ => Err(ResourceError::input("/group", "expected a group name or gid")),
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// `0o640` → `"0640"`.
pub fn mode_string(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Result<String, ResourceError> {
    let mut f = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The process umask, read without changing it (safe in a multi-threaded process).
fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

impl Desired {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let obj = state
            .as_object()
            .ok_or_else(|| ResourceError::input("", "expected a JSON object"))?;
        let path = obj
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ResourceError::input("/path", "missing required field \"path\""))?;
        if !path.starts_with('/') {
            return Err(ResourceError::input(
                "/path",
                format!("{path:?} is not absolute; give the full path starting with /"),
            ));
        }
        let path = PathBuf::from(path);
        let str_field = |k: &str| obj.get(k).and_then(Value::as_str);
        let content = match (obj.get("content"), obj.get("content_base64")) {
            (Some(_), Some(_)) => {
                return Err(ResourceError::input(
                    "/content_base64",
                    "give either content or content_base64, not both",
                ))
            }
            (Some(Value::String(s)), None) => Some(("content", s.as_bytes().to_vec())),
            (None, Some(Value::String(s))) => Some((
                "content_base64",
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| {
                        ResourceError::input(
                            "/content_base64",
                            format!(
                                "not valid base64 ({e}); expected standard base64 with padding"
                            ),
                        )
                    })?,
            )),
            (Some(_), None) => return Err(ResourceError::input("/content", "expected a string")),
            (None, Some(_)) => {
                return Err(ResourceError::input("/content_base64", "expected a string"))
            }
            (None, None) => None,
        };
        let target = str_field("target").map(str::to_owned);
        let exists = obj.get("exists").and_then(Value::as_bool);
        let want = match (str_field("type"), exists) {
            (Some("absent"), Some(true))
            | (Some("file" | "directory" | "symlink"), Some(false)) => {
                return Err(ResourceError::input(
                    "/exists",
                    "contradicts \"type\"; use \"exists\": false or \"type\": \"absent\" to remove",
                ))
            }
            (Some("absent"), _) | (None, Some(false)) => Want::Absent,
            (Some("file"), _) => Want::File,
            (Some("directory"), _) => Want::Dir,
            (Some("symlink"), _) => Want::Link,
            (Some(other), _) => {
                return Err(ResourceError::input(
                    "/type",
                    format!("unknown type {other:?}; expected file, directory, symlink or absent"),
                ))
            }
            (None, _) if content.is_some() => Want::File,
            (None, _) if target.is_some() => Want::Link,
            (None, _) => Want::Any,
        };
        if content.is_some() && want != Want::File {
            return Err(ResourceError::input(
                format!("/{}", content.as_ref().map(|c| c.0).unwrap_or("content")),
                format!(
                    "content only applies to a regular file, not type {}",
                    want.name()
                ),
            ));
        }
        match (want, &target) {
            (Want::Link, None) => {
                return Err(ResourceError::input(
                    "/target",
                    "a symlink needs \"target\": the path it points to",
                ))
            }
            (w, Some(_)) if w != Want::Link => {
                return Err(ResourceError::input(
                    "/target",
                    format!("target only applies to a symlink, not type {}", w.name()),
                ))
            }
            _ => {}
        }
        let mode = match obj.get("mode") {
            None => None,
            Some(Value::String(s))
                if (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) =>
            {
                Some(u32::from_str_radix(s, 8).expect("checked octal digits"))
            }
            Some(_) => {
                return Err(ResourceError::input(
                    "/mode",
                    "expected an octal mode as a string, e.g. \"0644\"",
                ))
            }
        };
        if mode.is_some() && matches!(want, Want::Link | Want::Absent) {
            return Err(ResourceError::input(
                "/mode",
                format!("mode does not apply to type {}", want.name()),
            ));
        }
        let owner = obj
            .get("owner")
            .map(|v| resolve_user(v).map(|id| (v.clone(), id)))
            .transpose()?;
        let group = obj
            .get("group")
            .map(|v| resolve_group(v).map(|id| (v.clone(), id)))
            .transpose()?;
        if want == Want::Absent && (owner.is_some() || group.is_some()) {
            return Err(ResourceError::input(
                if owner.is_some() { "/owner" } else { "/group" },
                "owner and group do not apply to an absent path",
            ));
        }
        let has_fields = obj.keys().any(|k| k != "path");
        Ok(Self {
            path,
            want,
            content,
            owner,
            group,
            mode,
            target,
            parents: obj.get("parents").and_then(Value::as_bool).unwrap_or(false),
            force: obj.get("force").and_then(Value::as_bool).unwrap_or(false),
            has_fields,
        })
    }
}

fn type_of(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

fn lstat(path: &Path) -> Result<Option<fs::Metadata>, ResourceError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn change(changes: &mut Map<String, Value>, field: &str, observed: Value, desired: Value) {
    changes.insert(
        field.into(),
        json!({"observed": observed, "desired": desired}),
    );
}

fn observe(d: &Desired) -> Result<Value, ResourceError> {
    let mut out = Map::new();
    out.insert("kind".into(), json!("file"));
    out.insert("path".into(), json!(d.path.display().to_string()));
    let mut changes = Map::new();
    match lstat(&d.path)? {
        None => {
            out.insert("exists".into(), json!(false));
            if !matches!(d.want, Want::Absent) && d.has_fields {
                change(&mut changes, "exists", json!(false), json!(true));
            }
        }
        Some(m) => {
            out.insert("exists".into(), json!(true));
            let ty = type_of(&m);
            out.insert("type".into(), json!(ty));
            let mut sha = None;
            if ty == "file" {
                out.insert("size".into(), json!(m.len()));
                let s = sha256_file(&d.path)?;
                out.insert("sha256".into(), json!(s));
                sha = Some(s);
            }
            out.insert("owner".into(), json!(user_name(m.uid())));
            out.insert("group".into(), json!(group_name(m.gid())));
            if ty != "symlink" {
                out.insert("mode".into(), json!(mode_string(m.mode())));
            }
            let mut link = None;
            if ty == "symlink" {
                let t = fs::read_link(&d.path).map_err(|e| io_err(&d.path, e))?;
                let t = t.to_string_lossy().into_owned();
                out.insert("target".into(), json!(t));
                link = Some(t);
            }
            let type_ok = match d.want {
                Want::Absent => {
                    change(&mut changes, "exists", json!(true), json!(false));
                    false
                }
                Want::Any => true,
                w => {
                    if w.name() != ty {
                        change(&mut changes, "type", json!(ty), json!(w.name()));
                        false
                    } else {
                        true
                    }
                }
            };
            if type_ok {
                if let (Some((field, bytes)), Some(sha)) = (&d.content, &sha) {
                    let want = sha256_hex(bytes);
                    // The observed text under the desired field's name, so a plan can show a
                    // real diff; only for small UTF-8 files asked for by `content`.
                    if *field == "content" && m.len() <= OBSERVED_CONTENT_MAX {
                        if let Ok(Ok(text)) = fs::read(&d.path).map(String::from_utf8) {
                            out.insert("content".into(), json!(text));
                        }
                    }
                    if &want != sha {
                        change(
                            &mut changes,
                            field,
                            json!(format!("sha256:{sha}")),
                            json!(format!("sha256:{want}")),
                        );
                    }
                }
                if let (Some(t), Some(l)) = (&d.target, &link) {
                    if t != l {
                        change(&mut changes, "target", json!(l), json!(t));
                    }
                }
                if let Some(mode) = d.mode {
                    if ty != "symlink" && m.mode() & 0o7777 != mode {
                        change(
                            &mut changes,
                            "mode",
                            json!(mode_string(m.mode())),
                            json!(mode_string(mode)),
                        );
                    }
                }
                if let Some((given, uid)) = &d.owner {
                    if m.uid() != *uid {
                        change(
                            &mut changes,
                            "owner",
                            json!(user_name(m.uid())),
                            given.clone(),
                        );
                    }
                }
                if let Some((given, gid)) = &d.group {
                    if m.gid() != *gid {
                        change(
                            &mut changes,
                            "group",
                            json!(group_name(m.gid())),
                            given.clone(),
                        );
                    }
                }
            }
        }
    }
    if d.has_fields {
        out.insert("changes".into(), Value::Object(changes));
    }
    Ok(Value::Object(out))
}

fn parent_of(path: &Path) -> Result<&Path, ResourceError> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| {
            ResourceError::input(
                "/path",
                format!("{} has no parent directory", path.display()),
            )
        })
}

fn ensure_parent(d: &Desired) -> Result<(), ResourceError> {
    let parent = parent_of(&d.path)?;
    if parent.is_dir() {
        return Ok(());
    }
    if !d.parents {
        return Err(ResourceError::Failed(format!(
            "parent directory {} does not exist; create it first or set \"parents\": true",
            parent.display()
        )));
    }
    fs::create_dir_all(parent).map_err(|e| io_err(parent, e))
}

/// Removes whatever is at the path (directories only with `force` unless empty).
fn remove(d: &Desired, m: &fs::Metadata) -> Result<(), ResourceError> {
    let p = &d.path;
    if m.is_dir() {
        if d.force {
            fs::remove_dir_all(p).map_err(|e| io_err(p, e))
        } else {
            fs::remove_dir(p).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                    ResourceError::Failed(format!(
                        "{} is a non-empty directory; set \"force\": true to remove it with its contents",
                        p.display()
                    ))
                } else {
                    io_err(p, e)
                }
            })
        }
    } else {
        fs::remove_file(p).map_err(|e| io_err(p, e))
    }
}

fn refuse_replace(d: &Desired, m: &fs::Metadata) -> ResourceError {
    ResourceError::Failed(format!(
        "{} is a {} but a {} is wanted; set \"force\": true to replace it",
        d.path.display(),
        type_of(m),
        d.want.name()
    ))
}

fn sync_dir(dir: &Path) -> Result<(), ResourceError> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory gets the
/// content, owner and mode, is fsynced and renamed over the path; then the directory is synced.
fn atomic_write(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), ResourceError> {
    let dir = parent_of(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.ingot-"))
        .tempfile_in(dir)
        .map_err(|e| io_err(dir, e))?;
    let tpath = tmp.path().to_owned();
    tmp.write_all(bytes).map_err(|e| io_err(&tpath, e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid))
            .map_err(|e| io_err(&tpath, e))?;
    }
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_err(&tpath, e))?;
    tmp.as_file().sync_all().map_err(|e| io_err(&tpath, e))?;
    tmp.persist(path).map_err(|e| io_err(path, e.error))?;
    sync_dir(dir)
}

/// Applies owner/group and mode to an existing path (not following symlinks for ownership).
fn apply_attrs(d: &Desired, m: &fs::Metadata) -> Result<(), ResourceError> {
    let p = &d.path;
    let uid = d.owner.as_ref().map(|o| o.1).filter(|u| *u != m.uid());
    let gid = d.group.as_ref().map(|g| g.1).filter(|g| *g != m.gid());
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::lchown(p, uid, gid).map_err(|e| io_err(p, e))?;
    }
    if let Some(mode) = d.mode {
        // chown may clear set-id bits, so compare against the current mode again.
        let now = fs::symlink_metadata(p).map_err(|e| io_err(p, e))?;
        if !now.file_type().is_symlink() && now.mode() & 0o7777 != mode {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).map_err(|e| io_err(p, e))?;
        }
    }
    Ok(())
}

fn ensure_file(d: &Desired, current: Option<&fs::Metadata>) -> Result<(), ResourceError> {
    let content: &[u8] = d.content.as_ref().map(|c| c.1.as_slice()).unwrap_or(&[]);
    if let Some(m) = current {
        if m.is_file() {
            let same = match &d.content {
                None => true,
                Some((_, bytes)) => {
                    m.len() == bytes.len() as u64
                        && fs::read(&d.path).map_err(|e| io_err(&d.path, e))? == *bytes
                }
            };
            if same {
                return apply_attrs(d, m);
            }
            let mode = d.mode.unwrap_or(m.mode() & 0o7777);
            let uid = d.owner.as_ref().map(|o| o.1).unwrap_or(m.uid());
            let gid = d.group.as_ref().map(|g| g.1).unwrap_or(m.gid());
            // The temporary file is ours; give it the file's owner back when that differs
            // (as root, or when asked for explicitly).
            let explicit = d.owner.is_some() || d.group.is_some();
            let keep = (!running_as(uid, gid) && (explicit || nix::unistd::geteuid().is_root()))
                .then_some((uid, gid));
            return atomic_write(&d.path, content, mode, keep);
        }
        if m.is_dir() || !m.file_type().is_symlink() {
            // A directory or a special file: only with force.
            if !d.force {
                return Err(refuse_replace(d, m));
            }
            if m.is_dir() {
                remove(d, m)?;
            }
        }
    }
    ensure_parent(d)?;
    let mode = d.mode.unwrap_or(0o666 & !umask());
    let owner = match (&d.owner, &d.group) {
        (None, None) => None,
        (o, g) => Some((
            o.as_ref()
                .map(|o| o.1)
                .unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
            g.as_ref()
                .map(|g| g.1)
                .unwrap_or_else(|| nix::unistd::getegid().as_raw()),
        )),
    };
    atomic_write(&d.path, content, mode, owner)
}

/// Whether a new file would get this owner anyway (then no chown is needed).
fn running_as(uid: u32, gid: u32) -> bool {
    nix::unistd::geteuid().as_raw() == uid && nix::unistd::getegid().as_raw() == gid
}

fn ensure_dir(d: &Desired, current: Option<&fs::Metadata>) -> Result<(), ResourceError> {
    if let Some(m) = current {
        if m.is_dir() {
            return apply_attrs(d, m);
        }
        if !d.force {
            return Err(refuse_replace(d, m));
        }
        remove(d, m)?;
    }
    ensure_parent(d)?;
    let mut b = fs::DirBuilder::new();
    b.mode(d.mode.unwrap_or(0o777));
    b.create(&d.path).map_err(|e| io_err(&d.path, e))?;
    let m = fs::symlink_metadata(&d.path).map_err(|e| io_err(&d.path, e))?;
    apply_attrs(d, &m)?;
    sync_dir(parent_of(&d.path)?)
}

fn ensure_link(d: &Desired, current: Option<&fs::Metadata>) -> Result<(), ResourceError> {
    let target = d.target.as_deref().expect("checked in parse");
    if let Some(m) = current {
        if m.file_type().is_symlink()
            && fs::read_link(&d.path).map_err(|e| io_err(&d.path, e))? == Path::new(target)
        {
            return apply_attrs(d, m);
        }
        if m.is_dir() || !(m.is_file() || m.file_type().is_symlink()) {
            if !d.force {
                return Err(refuse_replace(d, m));
            }
            if m.is_dir() {
                remove(d, m)?;
            }
        }
    }
    ensure_parent(d)?;
    let dir = parent_of(&d.path)?;
    let name = d
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A fresh symlink under a temporary name, renamed over the path: never a moment without one.
    let mut attempt = 0u32;
    let tmp = loop {
        let tmp = dir.join(format!(".{name}.ingot-{}-{}", std::process::id(), attempt));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(io_err(&tmp, e)),
        }
    };
    let uid = d.owner.as_ref().map(|o| o.1);
    let gid = d.group.as_ref().map(|g| g.1);
    let result = (|| {
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(&tmp, uid, gid).map_err(|e| io_err(&tmp, e))?;
        }
        fs::rename(&tmp, &d.path).map_err(|e| io_err(&d.path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir)
}

fn conform(d: &Desired) -> Result<(), ResourceError> {
    let current = lstat(&d.path)?;
    match d.want {
        Want::Absent => match &current {
            None => Ok(()),
            Some(m) => {
                remove(d, m)?;
                sync_dir(parent_of(&d.path)?)
            }
        },
        Want::File => ensure_file(d, current.as_ref()),
        Want::Dir => ensure_dir(d, current.as_ref()),
        Want::Link => ensure_link(d, current.as_ref()),
        Want::Any => match &current {
            None => ensure_file(d, None),
            Some(m) => apply_attrs(d, m),
        },
    }
}

impl Resource for File {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "A regular file, directory or symlink (or nothing) at a path, with content, owner, group and mode; files are written atomically."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["path"]
    }

    fn in_process(&self) -> bool {
        true
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "pattern": "^/", "description": "absolute path, e.g. \"/etc/motd\""},
                "type": {"enum": ["file", "directory", "symlink", "absent"],
                         "description": "one of file, directory, symlink, absent (default: file when content is given, symlink when target is given)"},
                "exists": {"type": "boolean", "description": "true or false; false removes the path"},
                "content": {"type": "string", "description": "the file's text content"},
                "content_base64": {"type": "string", "description": "the file's content as standard base64 (for binary files)"},
                "owner": {"type": ["string", "integer"], "description": "user name or numeric uid"},
                "group": {"type": ["string", "integer"], "description": "group name or numeric gid"},
                "mode": {"type": "string", "pattern": "^[0-7]{3,4}$", "description": "octal permission bits as a string, e.g. \"0644\""},
                "target": {"type": "string", "minLength": 1, "description": "the path a symlink points to"},
                "parents": {"type": "boolean", "description": "true to create missing parent directories"},
                "force": {"type": "boolean", "description": "true to replace a directory or special file of the wrong type, or remove a non-empty directory"}
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }

    fn actions(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "touch",
            "create the path as an empty file if missing (like conform), then set its modification time to now",
        )]
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        observe(&Desired::parse(desired)?)
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        let d = Desired::parse(desired)?;
        conform(&d)?;
        observe(&d)
    }

    fn action(&self, action: &str, state: &Value) -> Result<Value, ResourceError> {
        match action {
            "touch" => {
                let d = Desired::parse(state)?;
                if d.want == Want::Absent {
                    return Err(ResourceError::input(
                        "/exists",
                        "cannot touch an absent path",
                    ));
                }
                conform(&d)?;
                let f = fs::File::open(&d.path).map_err(|e| io_err(&d.path, e))?;
                f.set_modified(std::time::SystemTime::now())
                    .map_err(|e| io_err(&d.path, e))?;
                observe(&d)
            }
            other => Err(ResourceError::UnknownAction {
                kind: "file".into(),
                action: other.into(),
                known: super::known_actions(self),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::protocol;
    use std::ffi::OsString;
    use std::os::unix::fs::MetadataExt;

    /// Runs the protocol in-process: (exit code, stdout, stderr).
    fn call(action: &str, input: &str) -> (i32, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = protocol::run(
            &File,
            &[OsString::from(action)],
            input.as_bytes(),
            false,
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    fn json_call(action: &str, input: &Value) -> Value {
        let (code, out, err) = call(action, &input.to_string());
        assert_eq!(code, 0, "{action} {input}: {err}");
        serde_json::from_str(&out).unwrap()
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn seed_example_missing_file() {
        let (code, out, _) = call("inspect", r#"{"path":"/tmp/ingot-surely-missing/foo"}"#);
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "{\"kind\":\"file\",\"path\":\"/tmp/ingot-surely-missing/foo\",\"exists\":false}\n"
        );
    }

    #[test]
    fn file_cycle_with_asymmetric_modes_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("motd");
        let ps = p.to_str().unwrap();
        for mode in ["0640", "0755"] {
            let want = json!({"path": ps, "content": "hello\n", "mode": mode});
            let before = json_call("inspect", &want);
            assert!(!before["changes"].as_object().unwrap().is_empty());
            let after = json_call("conform", &want);
            assert_eq!(after["changes"], json!({}), "{after}");
            assert_eq!(after["mode"], mode);
            assert_eq!(after["type"], "file");
            assert_eq!(after["size"], 6);
            assert_eq!(after["sha256"], sha256_hex(b"hello\n"));
            assert_eq!(fs::read_to_string(&p).unwrap(), "hello\n");
            assert_eq!(mode_of(&p), u32::from_str_radix(mode, 8).unwrap());
            let ino = fs::metadata(&p).unwrap().ino();
            let mtime = fs::metadata(&p).unwrap().mtime_nsec();
            // Second conform: nothing changes (same inode, same mtime).
            let again = json_call("conform", &want);
            assert_eq!(again["changes"], json!({}));
            assert_eq!(fs::metadata(&p).unwrap().ino(), ino);
            assert_eq!(fs::metadata(&p).unwrap().mtime_nsec(), mtime);
            assert_eq!(json_call("inspect", &want)["changes"], json!({}));
        }
        // Only the mode differs: reported, then fixed in place.
        let want = json!({"path": ps, "content": "hello\n", "mode": "0600"});
        let seen = json_call("inspect", &want);
        assert_eq!(
            seen["changes"],
            json!({"mode": {"observed": "0755", "desired": "0600"}})
        );
        json_call("conform", &want);
        assert_eq!(mode_of(&p), 0o600);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn content_change_is_reported_by_digest_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let want = json!({"path": p, "content": "new"});
        let seen = json_call("inspect", &want);
        assert_eq!(
            seen["changes"]["content"],
            json!({"observed": format!("sha256:{}", sha256_hex(b"old")),
                   "desired": format!("sha256:{}", sha256_hex(b"new"))})
        );
        let ino = fs::metadata(&p).unwrap().ino();
        json_call("conform", &want);
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_ne!(fs::metadata(&p).unwrap().ino(), ino, "replaced by rename");
        assert_eq!(mode_of(&p), 0o640, "the mode is kept when not given");
    }

    #[test]
    fn base64_content_and_parents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/bin");
        let want = json!({"path": p, "content_base64": "AAEC/w==", "mode": "0644"});
        let (code, _, err) = call("conform", &want.to_string());
        assert_eq!(code, 1);
        assert!(err.contains("\"parents\": true"), "{err}");
        let mut want = want;
        want["parents"] = json!(true);
        json_call("conform", &want);
        assert_eq!(fs::read(&p).unwrap(), vec![0, 1, 2, 255]);
        assert_eq!(json_call("inspect", &want)["changes"], json!({}));
    }

    #[test]
    fn directory_symlink_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        let want = json!({"path": d, "type": "directory", "mode": "0750"});
        assert_eq!(
            json_call("inspect", &want)["changes"],
            json!({"exists": {"observed": false, "desired": true}})
        );
        let after = json_call("conform", &want);
        assert_eq!(after["type"], "directory");
        assert_eq!(after["mode"], "0750");
        assert_eq!(after["changes"], json!({}));
        assert_eq!(mode_of(&d), 0o750);

        let l = dir.path().join("l");
        let link = json!({"path": l, "target": "d"});
        json_call("conform", &link);
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("d"));
        let seen = json_call("inspect", &link);
        assert_eq!(seen["type"], "symlink");
        assert_eq!(seen["target"], "d");
        assert_eq!(seen["changes"], json!({}));
        // Retarget.
        let link2 = json!({"path": l, "target": "/nonexistent"});
        assert_eq!(
            json_call("inspect", &link2)["changes"],
            json!({"target": {"observed": "d", "desired": "/nonexistent"}})
        );
        json_call("conform", &link2);
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("/nonexistent"));

        // A file where a directory is wanted: refused without force.
        let f = dir.path().join("f");
        fs::write(&f, "x").unwrap();
        let (code, _, err) = call(
            "conform",
            &json!({"path": f, "type": "directory"}).to_string(),
        );
        assert_eq!(code, 1);
        assert!(err.contains("force"), "{err}");
        assert!(f.is_file());

        // Absent: the symlink goes (not its target), a non-empty dir needs force.
        json_call("conform", &json!({"path": l, "exists": false}));
        assert!(fs::symlink_metadata(&l).is_err());
        fs::write(d.join("inner"), "x").unwrap();
        let (code, _, err) = call("conform", &json!({"path": d, "type": "absent"}).to_string());
        assert_eq!(code, 1, "{err}");
        assert!(d.exists());
        let gone = json_call(
            "conform",
            &json!({"path": d, "type": "absent", "force": true}),
        );
        assert_eq!(gone["exists"], false);
        assert_eq!(gone["changes"], json!({}));
        assert!(!d.exists());
    }

    #[test]
    fn owner_and_group_by_name_and_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o");
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let want = json!({"path": p, "content": "", "owner": uid, "group": gid.to_string()});
        let after = json_call("conform", &want);
        assert_eq!(after["owner"], user_name(uid));
        assert_eq!(after["group"], group_name(gid));
        assert_eq!(after["changes"], json!({}));
        let (code, _, err) = call(
            "inspect",
            &json!({"path": p, "owner": "no-such-user-ingot"}).to_string(),
        );
        assert_eq!(code, 2);
        assert!(err.contains("/owner"), "{err}");
    }

    #[test]
    fn bad_input_exits_2_naming_the_field_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let cases = [
            ("not json", ""),
            (r#"{"path": 5}"#, "/path"),
            (r#"{"content": "x"}"#, "/path"),
            (
                &*format!(r#"{{"path": "{}", "colour": "red"}}"#, p.display()),
                "/colour",
            ),
            (
                &*format!(r#"{{"path": "{}", "mode": 644}}"#, p.display()),
                "/mode",
            ),
            (
                &*format!(r#"{{"path": "{}", "mode": "0999"}}"#, p.display()),
                "/mode",
            ),
            (
                &*format!(r#"{{"path": "{}", "kind": "user"}}"#, p.display()),
                "/kind",
            ),
            (r#"{"path": "relative"}"#, "/path"),
            (
                &*format!(
                    r#"{{"path": "{}", "content": "a", "content_base64": "YQ=="}}"#,
                    p.display()
                ),
                "/content_base64",
            ),
            ("[1, 2]", ""),
            ("42", ""),
        ];
        for (input, field) in cases {
            let (code, out, err) = call("conform", input);
            if input.starts_with('[') {
                // A batch: every element fails on its own, the array is still printed.
                assert_eq!(code, 1, "{input}");
                let v: Value = serde_json::from_str(&out).unwrap();
                assert!(v[0]["error"]
                    .as_str()
                    .unwrap()
                    .contains("expected a JSON object"));
                continue;
            }
            assert_eq!(code, 2, "{input}: {err}");
            assert!(out.is_empty());
            assert!(err.contains(field), "{input}: {err}");
            assert!(!p.exists(), "{input} changed something");
        }
        // Meta keys are allowed.
        let ok = json!({"path": p, "kind": "file", "sensitive": ["content"], "notify": [], "content": "s3cret"});
        let out = json_call("conform", &ok);
        assert_eq!(fs::read_to_string(&p).unwrap(), "s3cret");
        assert!(!out.to_string().contains("s3cret"));
    }

    #[test]
    fn usage_unknown_action_describe_and_batches() {
        let (code, out, err) = protocol::run_args(&File, &[], "");
        assert_eq!(code, 2);
        assert!(out.is_empty());
        assert!(err.contains("usage: file ACTION"), "{err}");

        let (code, _, err) = call("explode", "{}");
        assert_eq!(code, 2);
        assert!(err.contains("unknown action \"explode\""), "{err}");
        assert!(err.contains("inspect, conform, describe, touch"), "{err}");

        let d: Value = serde_json::from_str(&call("describe", "").1).unwrap();
        assert_eq!(d["kind"], "file");
        assert_eq!(d["identity"], json!(["path"]));
        assert_eq!(d["batch"], true);
        assert!(d["actions"]["touch"].is_string());
        assert!(jsonschema::validator_for(&d["schema"]).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let batch = json!([
            {"path": a, "content": "A"},
            {"path": "relative"},
            {"path": dir.path().join("b"), "type": "directory"},
        ]);
        let (code, out, _) = call("conform", &batch.to_string());
        assert_eq!(code, 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(v[0]["changes"], json!({}));
        assert!(v[1]["error"].as_str().unwrap().contains("/path"));
        assert_eq!(v[2]["type"], "directory");
        assert_eq!(fs::read_to_string(&a).unwrap(), "A");

        let touched = json_call("touch", &json!({"path": dir.path().join("t")}));
        assert_eq!(touched["exists"], true);
        assert_eq!(touched["size"], 0);
    }
}
