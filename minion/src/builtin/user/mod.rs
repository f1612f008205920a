//! The `user` resource: a local account managed with the system's own shadow tools
//! (`useradd`, `usermod`, `userdel`, and `chpasswd -e` for the password hash).
//!
//! Desired state: `name` (identity), `state` (`present` | `absent`, default `present`), `uid`,
//! `gid` or `group` (primary group by number or name), `groups` (the exact set of supplementary
//! groups), `home`, `shell`, `comment` (GECOS), `password` (an already hashed password, as in
//! `/etc/shadow`; sensitive), `system`, `create_home`, `move_home`, `remove_home`, and `root`.
//!
//! `root` is an alternate root directory (an image, a test tree): the tools run with
//! `--prefix ROOT` (no chroot needed) and inspect reads `ROOT/etc/passwd`, `ROOT/etc/group` and
//! `ROOT/etc/shadow`. Without it the host's files are used.
//!
//! The password hash never leaves the resource in clear: the observed `password` is `"***"`
//! when a hash is set, a password difference is reported as `"***"` on both sides, the
//! observed state lists `"sensitive": ["password"]`, and tool command lines in error messages
//! show `***` in its place. On the host the hash is set through `chpasswd -e` on stdin, so it
//! does not appear in the process list; under an alternate root `usermod --prefix ROOT -p` is
//! used (chpasswd has no `--prefix`).
//!
//! - [`common`]: the helpers the other system resources (`group`, `cron`, `service`,
//!   `package`) share: state parsing, `changes` computation and running a tool with a clear
//!   error.
//! - `account`: reading an account from `passwd`, `group` and `shadow`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Resource, ResourceError};
use account::{hash_is_set, read_account};
use common::{diff, parse, Presence, Tool};

mod account;
pub(crate) mod common;

const KIND: &str = "user";

/// The `user` resource.
pub struct User;

/// The desired state of a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserState {
    name: String,
    #[serde(default)]
    state: Presence,
    uid: Option<u32>,
    gid: Option<u32>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    home: Option<String>,
    shell: Option<String>,
    comment: Option<String>,
    password: Option<String>,
    system: Option<bool>,
    create_home: Option<bool>,
    move_home: Option<bool>,
    remove_home: Option<bool>,
    root: Option<String>,
}

impl UserState {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let s: Self = parse(KIND, state)?;
        common::check_name("/name", &s.name)?;
        if let Some(g) = &s.group {
            common::check_name("/group", g)?;
        }
        for (i, g) in s.groups.iter().flatten().enumerate() {
            common::check_name(&format!("/groups/{i}"), g)?;
        }
        for (ptr, v) in [
            ("/home", &s.home),
            ("/shell", &s.shell),
            ("/comment", &s.comment),
            ("/password", &s.password),
        ] {
            if let Some(v) = v {
                common::check_field(ptr, v)?;
            }
        }
        for (ptr, v) in [("/home", &s.home), ("/shell", &s.shell)] {
            if let Some(v) = v {
                if !v.starts_with('/') {
                    return Err(ResourceError::input(
                        ptr,
                        format!("{v:?} must be an absolute path"),
                    ));
                }
            }
        }
        Ok(s)
    }
}

fn observe(d: &UserState) -> Result<Value, ResourceError> {
    let root = common::alt_root(d.root.as_deref())?;
    let acct = read_account(root.as_deref(), &d.name, d.password.is_some())?;
    let (mut o, mut changes) =
        common::account_head(KIND, &d.name, d.root.as_deref(), acct.is_some(), d.state);
    let Some(a) = acct else {
        return Ok(common::with_changes(o, changes));
    };
    o.insert("uid".into(), json!(a.uid));
    o.insert("gid".into(), json!(a.gid));
    if let Some(g) = &a.group {
        o.insert("group".into(), json!(g));
    }
    o.insert("groups".into(), json!(a.groups));
    o.insert("home".into(), json!(a.home));
    o.insert("shell".into(), json!(a.shell));
    o.insert("comment".into(), json!(a.comment));
    let set = a.hash.as_deref().map(hash_is_set).unwrap_or(false);
    if set {
        o.insert("password".into(), json!("***"));
    }
    if set || d.password.is_some() {
        o.insert("sensitive".into(), json!(["password"]));
    }
    if d.state == Presence::Present {
        if let Some(v) = d.uid {
            diff(&mut changes, "uid", &json!(a.uid), &json!(v));
        }
        if let Some(v) = d.gid {
            diff(&mut changes, "gid", &json!(a.gid), &json!(v));
        }
        if let Some(v) = &d.group {
            diff(&mut changes, "group", &json!(a.group), &json!(v));
        }
        if let Some(v) = &d.groups {
            diff(
                &mut changes,
                "groups",
                &json!(a.groups),
                &json!(common::sorted_set(v.clone())),
            );
        }
        if let Some(v) = &d.home {
            diff(&mut changes, "home", &json!(a.home), &json!(v));
        }
        if let Some(v) = &d.shell {
            diff(&mut changes, "shell", &json!(a.shell), &json!(v));
        }
        if let Some(v) = &d.comment {
            diff(&mut changes, "comment", &json!(a.comment), &json!(v));
        }
        if let Some(v) = &d.password {
            if a.hash.as_deref() != Some(v.as_str()) {
                // Never the hash itself: both sides masked.
                changes.insert(
                    "password".into(),
                    json!({"observed": "***", "desired": "***"}),
                );
            }
        }
    }
    let mut out = common::with_changes(o, changes);
    if d.password.is_some() && out.get("changes").is_none() {
        // A choreograph comparing field by field would see "***" against the hash: say
        // explicitly that nothing differs.
        out["changes"] = json!({});
    }
    Ok(out)
}

/// `--prefix ROOT` for an alternate root.
fn prefix(tool: Tool, root: Option<&std::path::Path>) -> Tool {
    match root {
        Some(r) => tool.arg("--prefix").arg(r.display().to_string()),
        None => tool,
    }
}

const HINT_GROUPS: &str =
    "check that the primary and supplementary groups exist (manage them with the group resource first), that the uid is free, and that you run as root";

/// Sets the password hash: `chpasswd -e` (stdin) on the host, `usermod --prefix -p` otherwise.
fn set_password(
    root: Option<&std::path::Path>,
    name: &str,
    hash: &str,
) -> Result<(), ResourceError> {
    match root {
        None => Tool::new("chpasswd")
            .arg("-e")
            .stdin(format!("{name}:{hash}\n"))
            .hint("check that the user exists and that you run as root")
            .retry_when_locked()
            .run()
            .map(drop),
        Some(_) => prefix(Tool::new("usermod"), root)
            .arg("-p")
            .secret_arg(hash)
            .arg(name)
            .hint("check that the user exists under the root directory and that you run as root")
            .retry_when_locked()
            .run()
            .map(drop),
    }
}

fn conform(d: &UserState) -> Result<Value, ResourceError> {
    let root = common::alt_root(d.root.as_deref())?;
    let root = root.as_deref();
    let acct = read_account(root, &d.name, d.password.is_some())?;
    if d.gid.is_some() && d.group.is_some() {
        // Both name the primary group: they must agree, else usermod would flip-flop.
        let groups = common::read_db(&common::etc_file(root, "group"))?;
        let by_name = groups
            .iter()
            .find(|g| g.first() == d.group.as_ref())
            .and_then(|g| g.get(2).and_then(|x| x.parse::<u32>().ok()));
        if by_name.is_some() && by_name != d.gid {
            return Err(ResourceError::input(
                "/gid",
                format!(
                    "gid {} and group {:?} (gid {}) name different primary groups; give only one",
                    d.gid.unwrap_or_default(),
                    d.group.as_deref().unwrap_or_default(),
                    by_name.unwrap_or_default()
                ),
            ));
        }
    }
    match (d.state, acct) {
        (Presence::Absent, None) => {}
        (Presence::Absent, Some(_)) => {
            let mut t = prefix(Tool::new("userdel"), root);
            if d.remove_home == Some(true) {
                t = t.arg("--remove");
            }
            t.arg(&d.name)
                .hint("check that no process of the user is running and that you run as root")
                .retry_when_locked()
                .run()?;
        }
        (Presence::Present, None) => {
            let mut t = prefix(Tool::new("useradd"), root);
            if let Some(v) = d.uid {
                t = t.arg("--uid").arg(v.to_string());
            }
            if let Some(g) = &d.group {
                t = t.arg("--gid").arg(g);
            } else if let Some(v) = d.gid {
                t = t.arg("--gid").arg(v.to_string());
            }
            if let Some(v) = &d.groups {
                t = t
                    .arg("--groups")
                    .arg(common::sorted_set(v.clone()).join(","));
            }
            if let Some(v) = &d.home {
                t = t.arg("--home-dir").arg(v);
            }
            if let Some(v) = &d.shell {
                t = t.arg("--shell").arg(v);
            }
            if let Some(v) = &d.comment {
                t = t.arg("--comment").arg(v);
            }
            if d.system == Some(true) {
                t = t.arg("--system");
            }
            t = match d.create_home {
                Some(true) => t.arg("--create-home"),
                Some(false) => t.arg("--no-create-home"),
                None => t,
            };
            t.arg(&d.name).hint(HINT_GROUPS).retry_when_locked().run()?;
            if let Some(h) = &d.password {
                set_password(root, &d.name, h)?;
            }
        }
        (Presence::Present, Some(a)) => {
            let mut t = prefix(Tool::new("usermod"), root);
            let mut any = false;
            if let Some(v) = d.uid.filter(|v| *v != a.uid) {
                t = t.arg("--uid").arg(v.to_string());
                any = true;
            }
            if let Some(g) = d.group.as_ref().filter(|g| a.group.as_ref() != Some(*g)) {
                t = t.arg("--gid").arg(g);
                any = true;
            } else if let Some(v) = d.gid.filter(|v| d.group.is_none() && *v != a.gid) {
                t = t.arg("--gid").arg(v.to_string());
                any = true;
            }
            if let Some(v) = &d.groups {
                let want = common::sorted_set(v.clone());
                if want != a.groups {
                    t = t.arg("--groups").arg(want.join(","));
                    any = true;
                }
            }
            if let Some(v) = d.home.as_ref().filter(|v| **v != a.home) {
                t = t.arg("--home").arg(v);
                if d.move_home == Some(true) {
                    t = t.arg("--move-home");
                }
                any = true;
            }
            if let Some(v) = d.shell.as_ref().filter(|v| **v != a.shell) {
                t = t.arg("--shell").arg(v);
                any = true;
            }
            if let Some(v) = d.comment.as_ref().filter(|v| **v != a.comment) {
                t = t.arg("--comment").arg(v);
                any = true;
            }
            if any {
                t.arg(&d.name).hint(HINT_GROUPS).retry_when_locked().run()?;
            }
            if let Some(h) = d.password.as_ref().filter(|h| a.hash.as_ref() != Some(*h)) {
                set_password(root, &d.name, h)?;
            }
        }
    }
    observe(d)
}

impl Resource for User {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "A local user account (passwd/shadow), managed with useradd/usermod/userdel, optionally under an alternate root directory."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn schema(&self) -> Value {
        let name = json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^-:,/\\s][^:,/\\s]*$"});
        let text = json!({"type": "string", "pattern": "^[^:\\n]*$"});
        let path = json!({"type": "string", "pattern": "^/[^:\\n]*$"});
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "user",
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": name.clone(),
                "state": {"enum": ["present", "absent"], "default": "present", "description": "Whether the account exists."},
                "uid": {"type": "integer", "minimum": 0, "maximum": 4294967294u32},
                "gid": {"type": "integer", "minimum": 0, "maximum": 4294967294u32, "description": "Primary group by number."},
                "group": {"type": "string", "minLength": 1, "description": "Primary group by name (the group must exist)."},
                "groups": {"type": "array", "items": name, "description": "The exact set of supplementary groups."},
                "home": path.clone(),
                "shell": path,
                "comment": text.clone(),
                "password": {"type": "string", "pattern": "^[^:\\n]*$", "writeOnly": true, "description": "Password hash as stored in shadow (e.g. from `mkpasswd -m sha-512`); sensitive, never reported."},
                "system": {"type": "boolean", "description": "Create as a system account (on creation only)."},
                "create_home": {"type": "boolean", "description": "Create the home directory on creation (default: the system's useradd default)."},
                "move_home": {"type": "boolean", "description": "Move the home directory's content when home changes."},
                "remove_home": {"type": "boolean", "description": "Remove the home directory and mail spool when state is absent."},
                "root": {"type": "string", "pattern": "^/", "description": "Alternate root directory: tools run with --prefix ROOT and ROOT/etc/* is read."},
            }
        })
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        observe(&UserState::parse(desired)?)
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        conform(&UserState::parse(desired)?)
    }
}
