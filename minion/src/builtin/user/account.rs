//! Reading an account from the colon-separated databases: `passwd`, `group` and `shadow`
//! (under an alternate root when one is given).

use std::path::Path;

use super::common;
use crate::builtin::ResourceError;

/// A user as read from passwd/group/shadow.
pub(super) struct Account {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) comment: String,
    pub(super) home: String,
    pub(super) shell: String,
    /// Name of the primary group, when the group file has it.
    pub(super) group: Option<String>,
    /// Supplementary groups, sorted.
    pub(super) groups: Vec<String>,
    /// The shadow hash; `None` when shadow is unreadable or has no entry.
    pub(super) hash: Option<String>,
}

/// Reads an account from the passwd, group and shadow files under `root`.
pub(super) fn read_account(
    root: Option<&Path>,
    name: &str,
    need_hash: bool,
) -> Result<Option<Account>, ResourceError> {
    let passwd = common::read_db(&common::etc_file(root, "passwd"))?;
    let Some(row) = passwd
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
    else {
        return Ok(None);
    };
    let field = |i: usize| row.get(i).cloned().unwrap_or_default();
    let num = |i: usize| field(i).parse::<u32>().unwrap_or(u32::MAX);
    let gid = num(3);
    let groups_db = common::read_db(&common::etc_file(root, "group"))?;
    let group = groups_db
        .iter()
        .find(|g| g.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(gid))
        .and_then(|g| g.first().cloned());
    let groups = common::sorted_set(
        groups_db
            .iter()
            .filter(|g| {
                g.get(3)
                    .map(|m| m.split(',').any(|u| u == name))
                    .unwrap_or(false)
            })
            .filter_map(|g| g.first().cloned()),
    );
    let shadow_path = common::etc_file(root, "shadow");
    let hash = match common::read_db(&shadow_path) {
        Ok(rows) => rows
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .and_then(|r| r.get(1).cloned()),
        Err(e) if need_hash => {
            return Err(ResourceError::Failed(format!(
                "cannot read the password hash: {e}; run as root to manage passwords"
            )))
        }
        Err(_) => None,
    };
    Ok(Some(Account {
        uid: num(2),
        gid,
        comment: field(4),
        home: field(5),
        shell: field(6),
        group,
        groups,
        hash,
    }))
}

/// Whether a shadow hash field holds a hash (not empty, not a lock marker alone).
pub(super) fn hash_is_set(hash: &str) -> bool {
    !hash.is_empty() && hash != "!" && hash != "*" && hash != "!*"
}
