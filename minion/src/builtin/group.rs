//! The `group` resource: a local group managed with the system's own shadow tools
//! (`groupadd`, `groupmod`, `groupdel`, and `chgpasswd -e` for the password hash).
//!
//! Desired state: `name` (identity), `state` (`present` | `absent`, default `present`), `gid`,
//! `members` (the exact set of user members; they must exist), `password` (an already hashed
//! group password as in `/etc/gshadow`; sensitive), `system`, and `root`, an alternate root
//! directory: the tools run with `--prefix ROOT` and inspect reads `ROOT/etc/group` and
//! `ROOT/etc/gshadow`.
//!
//! As for `user`, the password hash is never reported: the observed `password` is `"***"`,
//! differences are masked on both sides and the observed state lists
//! `"sensitive": ["password"]`.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use super::user::common::{self, diff, parse, Presence, Tool};
use super::{Resource, ResourceError};

const KIND: &str = "group";

/// The `group` resource.
pub struct Group;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupState {
    name: String,
    #[serde(default)]
    state: Presence,
    gid: Option<u32>,
    members: Option<Vec<String>>,
    password: Option<String>,
    system: Option<bool>,
    root: Option<String>,
}

impl GroupState {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let s: Self = parse(KIND, state)?;
        common::check_name("/name", &s.name)?;
        for (i, m) in s.members.iter().flatten().enumerate() {
            common::check_name(&format!("/members/{i}"), m)?;
        }
        if let Some(p) = &s.password {
            common::check_field("/password", p)?;
        }
        Ok(s)
    }
}

struct Observed {
    gid: u32,
    members: Vec<String>,
    hash: Option<String>,
}

fn read_group(
    root: Option<&Path>,
    name: &str,
    need_hash: bool,
) -> Result<Option<Observed>, ResourceError> {
    let rows = common::read_db(&common::etc_file(root, "group"))?;
    let Some(row) = rows
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
    else {
        return Ok(None);
    };
    let gid = row
        .get(2)
        .and_then(|g| g.parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    let members = common::sorted_set(
        row.get(3)
            .map(|m| m.split(',').collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    let hash = match common::read_db(&common::etc_file(root, "gshadow")) {
        Ok(rows) => rows
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .and_then(|r| r.get(1).cloned()),
        Err(e) if need_hash => {
            return Err(ResourceError::Failed(format!(
                "cannot read the group password hash: {e}; run as root to manage group passwords"
            )))
        }
        Err(_) => None,
    };
    Ok(Some(Observed { gid, members, hash }))
}

fn observe(d: &GroupState) -> Result<Value, ResourceError> {
    let root = common::alt_root(d.root.as_deref())?;
    let g = read_group(root.as_deref(), &d.name, d.password.is_some())?;
    let (mut o, mut changes) =
        common::account_head(KIND, &d.name, d.root.as_deref(), g.is_some(), d.state);
    let Some(g) = g else {
        return Ok(common::with_changes(o, changes));
    };
    o.insert("gid".into(), json!(g.gid));
    o.insert("members".into(), json!(g.members));
    let set = g
        .hash
        .as_deref()
        .map(|h| !h.is_empty() && h != "!" && h != "*" && h != "!*")
        .unwrap_or(false);
    if set {
        o.insert("password".into(), json!("***"));
    }
    if set || d.password.is_some() {
        o.insert("sensitive".into(), json!(["password"]));
    }
    if d.state == Presence::Present {
        if let Some(v) = d.gid {
            diff(&mut changes, "gid", &json!(g.gid), &json!(v));
        }
        if let Some(v) = &d.members {
            diff(
                &mut changes,
                "members",
                &json!(g.members),
                &json!(common::sorted_set(v.clone())),
            );
        }
        if let Some(v) = &d.password {
            if g.hash.as_deref() != Some(v.as_str()) {
                changes.insert(
                    "password".into(),
                    json!({"observed": "***", "desired": "***"}),
                );
            }
        }
    }
    let mut out = common::with_changes(o, changes);
    if d.password.is_some() && out.get("changes").is_none() {
        out["changes"] = json!({});
    }
    Ok(out)
}

fn prefix(tool: Tool, root: Option<&Path>) -> Tool {
    match root {
        Some(r) => tool.arg("--prefix").arg(r.display().to_string()),
        None => tool,
    }
}

const HINT: &str = "check that the gid is free, that every member exists (manage users with the user resource), and that you run as root";

fn set_password(root: Option<&Path>, name: &str, hash: &str) -> Result<(), ResourceError> {
    match root {
        None => Tool::new("chgpasswd")
            .arg("-e")
            .stdin(format!("{name}:{hash}\n"))
            .hint("check that the group exists and that you run as root")
            .retry_when_locked()
            .run()
            .map(drop),
        Some(_) => prefix(Tool::new("groupmod"), root)
            .arg("--password")
            .secret_arg(hash)
            .arg(name)
            .hint("check that the group exists under the root directory and that you run as root")
            .retry_when_locked()
            .run()
            .map(drop),
    }
}

fn conform(d: &GroupState) -> Result<Value, ResourceError> {
    let root = common::alt_root(d.root.as_deref())?;
    let root = root.as_deref();
    let g = read_group(root, &d.name, d.password.is_some())?;
    match (d.state, g) {
        (Presence::Absent, None) => {}
        (Presence::Absent, Some(_)) => {
            prefix(Tool::new("groupdel"), root)
                .arg(&d.name)
                .hint("a group that is some user's primary group cannot be removed: change or remove that user first; run as root")
                .retry_when_locked()
                .run()?;
        }
        (Presence::Present, None) => {
            let mut t = prefix(Tool::new("groupadd"), root);
            if let Some(v) = d.gid {
                t = t.arg("--gid").arg(v.to_string());
            }
            if d.system == Some(true) {
                t = t.arg("--system");
            }
            if let Some(m) = d.members.as_ref().filter(|m| !m.is_empty()) {
                t = t
                    .arg("--users")
                    .arg(common::sorted_set(m.clone()).join(","));
            }
            t.arg(&d.name).hint(HINT).retry_when_locked().run()?;
            if let Some(h) = &d.password {
                set_password(root, &d.name, h)?;
            }
        }
        (Presence::Present, Some(g)) => {
            if let Some(v) = d.gid.filter(|v| *v != g.gid) {
                prefix(Tool::new("groupmod"), root)
                    .arg("--gid")
                    .arg(v.to_string())
                    .arg(&d.name)
                    .hint(HINT)
                    .retry_when_locked()
                    .run()?;
            }
            if let Some(m) = &d.members {
                let want = common::sorted_set(m.clone());
                if want != g.members {
                    prefix(Tool::new("groupmod"), root)
                        .arg("--users")
                        .arg(want.join(","))
                        .arg(&d.name)
                        .hint(HINT)
                        .retry_when_locked()
                        .run()?;
                }
            }
            if let Some(h) = d.password.as_ref().filter(|h| g.hash.as_ref() != Some(*h)) {
                set_password(root, &d.name, h)?;
            }
        }
    }
    observe(d)
}

impl Resource for Group {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "A local group (group/gshadow), managed with groupadd/groupmod/groupdel, optionally under an alternate root directory."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn schema(&self) -> Value {
        let name = json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^-:,/\\s][^:,/\\s]*$"});
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "group",
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": name.clone(),
                "state": {"enum": ["present", "absent"], "default": "present"},
                "gid": {"type": "integer", "minimum": 0, "maximum": 4294967294u32},
                "members": {"type": "array", "items": name, "description": "The exact set of user members (each must exist)."},
                "password": {"type": "string", "pattern": "^[^:\\n]*$", "writeOnly": true, "description": "Group password hash as stored in gshadow; sensitive, never reported."},
                "system": {"type": "boolean", "description": "Create as a system group (on creation only)."},
                "root": {"type": "string", "pattern": "^/", "description": "Alternate root directory: tools run with --prefix ROOT and ROOT/etc/* is read."},
            }
        })
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        observe(&GroupState::parse(desired)?)
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        conform(&GroupState::parse(desired)?)
    }
}
