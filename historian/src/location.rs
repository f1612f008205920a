//! Where the history lives: an SQLite file (the default) or a PostgreSQL URL.

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that overrides the default history location.
pub const ENV_VAR: &str = "INGOT_HISTORY";

/// A history store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file (created with its directory on first write).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://user@host:port/db`).
    Postgres(String),
}

impl Location {
    /// `postgres://...` or `postgresql://...` selects PostgreSQL; anything else is a file path.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Self::Postgres(s.to_owned())
        } else {
            Self::Sqlite(PathBuf::from(s))
        }
    }

    /// The location to use: `explicit` (a `--history` flag) first, then `$INGOT_HISTORY`, then
    /// [`default_path`].
    pub fn resolve(explicit: Option<&str>, master: Option<&Path>, minion: Option<&Path>) -> Self {
        if let Some(s) = explicit.filter(|s| !s.is_empty()) {
            return Self::parse(s);
        }
        match std::env::var(ENV_VAR) {
            Ok(s) if !s.is_empty() => Self::parse(&s),
            _ => Self::Sqlite(default_path(master, minion)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            // Never print a password that may be in the URL.
            Self::Postgres(url) => write!(f, "{}", hide_password(url)),
        }
    }
}

fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// Where a master tree lives when none is named (the same as the master's `DEFAULT_DIR`).
pub const DEFAULT_MASTER_DIR: &str = "/var/lib/ingot/master";

/// The history the review commands (`ingot history`) read, found the way an operator expects:
/// `--history`; else the history of the master tree `master` (`--master`, `$INGOT_MASTER` or
/// the settings file); else `$INGOT_HISTORY`; else that of the master tree the working
/// directory is in (a directory with `actors/` and `logs/`, itself or above); else that of the
/// default master tree when it has one; else [`default_path`] (where `ingot run` records).
pub fn for_review(explicit: Option<&str>, master: Option<&Path>) -> Location {
    if let Some(h) = explicit.filter(|s| !s.is_empty()) {
        return Location::parse(h);
    }
    if let Some(m) = master {
        return Location::Sqlite(default_path(Some(m), None));
    }
    if let Ok(h) = std::env::var(ENV_VAR) {
        if !h.is_empty() {
            return Location::parse(&h);
        }
    }
    let cwd = std::env::current_dir().ok();
    let standing_in = cwd
        .as_deref()
        .into_iter()
        .flat_map(Path::ancestors)
        .find(|d| d.join("actors").is_dir() && d.join("logs").is_dir());
    if let Some(m) = standing_in {
        return Location::Sqlite(default_path(Some(m), None));
    }
    let default_master = default_path(Some(Path::new(DEFAULT_MASTER_DIR)), None);
    if default_master.is_file() {
        return Location::Sqlite(default_master);
    }
    Location::Sqlite(default_path(None, None))
}

/// The default SQLite file: `MASTER/logs/history.db` for a master, `MINION/logs/history.db` for
/// local minion commands, else `$XDG_STATE_HOME/ingot/history.db` (or
/// `~/.local/state/ingot/history.db`, or `./history.db` without a home).
pub fn default_path(master: Option<&Path>, minion: Option<&Path>) -> PathBuf {
    if let Some(dir) = master.or(minion) {
        return dir.join("logs").join("history.db");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(dir) => dir.join("ingot").join("history.db"),
        None => PathBuf::from("history.db"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_postgres_and_paths_sqlite() {
        assert!(matches!(
            Location::parse("postgres://u@h/db"),
            Location::Postgres(_)
        ));
        assert!(matches!(
            Location::parse("postgresql://u@h/db"),
            Location::Postgres(_)
        ));
        assert_eq!(
            Location::parse("/tmp/h.db"),
            Location::Sqlite("/tmp/h.db".into())
        );
    }

    #[test]
    fn master_and_minion_dirs_choose_their_logs() {
        assert_eq!(
            default_path(Some(Path::new("/srv/master")), None),
            Path::new("/srv/master/logs/history.db")
        );
        assert_eq!(
            default_path(None, Some(Path::new("/srv/minion"))),
            Path::new("/srv/minion/logs/history.db")
        );
    }

    #[test]
    fn passwords_are_hidden_when_displayed() {
        let l = Location::parse("postgres://bob:hunter2@db:5432/h");
        assert_eq!(l.to_string(), "postgres://bob:***@db:5432/h");
    }
}
