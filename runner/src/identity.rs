//! Resolving a user/group to ids in the parent, so the child only makes raw syscalls.
//!
//! NSS lookups allocate and may open files: they are not async-signal-safe, so they must not run
//! between fork and exec in a multithreaded process. std's `uid()`/`gid()` would also drop the
//! supplementary groups, so the runner sets groups, gid and uid itself in `pre_exec`.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::RunError;

/// The ids a child runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (None: keep the runner's).
    pub uid: Option<Uid>,
    /// The primary group id.
    pub gid: Gid,
    /// Supplementary groups.
    pub groups: Vec<Gid>,
}

impl Identity {
    /// Resolves `user` (name or uid) and `group` (name or gid). With only a user, its primary
    /// group and supplementary groups are used; with only a group, that group alone.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Self>, RunError> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let user = user.map(lookup_user).transpose()?;
        let gid = match group {
            Some(g) => lookup_group(g)?,
            None => user.as_ref().map(|u| u.gid).unwrap_or_else(Gid::current),
        };
        let groups = match &user {
            Some(u) => {
                let cname = CString::new(u.name.clone())
                    .map_err(|_| RunError::UnknownUser(u.name.clone()))?;
                let mut g =
                    nix::unistd::getgrouplist(&cname, u.gid).unwrap_or_else(|_| vec![u.gid]);
                if !g.contains(&gid) {
                    g.insert(0, gid);
                }
                g
            }
            None => vec![gid],
        };
        Ok(Some(Self {
            uid: user.map(|u| u.uid),
            gid,
            groups,
        }))
    }

    /// Applies the identity; called in the child between fork and exec (raw syscalls only).
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        let errno = |e: nix::errno::Errno| std::io::Error::from_raw_os_error(e as i32);
        nix::unistd::setgroups(&self.groups).map_err(errno)?;
        nix::unistd::setgid(self.gid).map_err(errno)?;
        if let Some(uid) = self.uid {
            nix::unistd::setuid(uid).map_err(errno)?;
        }
        Ok(())
    }
}

fn lookup_user(spec: &str) -> Result<User, RunError> {
    let found = match spec.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(spec),
    };
    found
        .ok()
        .flatten()
        .ok_or_else(|| RunError::UnknownUser(spec.to_owned()))
}

fn lookup_group(spec: &str) -> Result<Gid, RunError> {
    gid_of(spec).ok_or_else(|| RunError::UnknownGroup(spec.to_owned()))
}

/// The uid a user spec names: a number as it is, else the user of that name.
pub fn uid_of(spec: &str) -> Option<Uid> {
    match spec.parse::<u32>() {
        Ok(n) => Some(Uid::from_raw(n)),
        Err(_) => User::from_name(spec).ok().flatten().map(|u| u.uid),
    }
}

/// The gid a group spec names: a number as it is, else the group of that name.
pub fn gid_of(spec: &str) -> Option<Gid> {
    match spec.parse::<u32>() {
        Ok(n) => Some(Gid::from_raw(n)),
        Err(_) => Group::from_name(spec).ok().flatten().map(|g| g.gid),
    }
}
