//! `ingot init minion DIR`: mold's minion tree with the built-ins as symlinks to `ingot`.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::builtin;

/// The directories of a minion tree.
pub const DIRS: &[&str] = &["logs", "certs", "cache", "facts", "resources"];

/// The default minion directory when neither `--minion` nor `INGOT_MINION` is given.
pub const DEFAULT_DIR: &str = "/var/lib/ingot/minion";

/// Why the tree could not be laid out.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A directory or link could not be created.
    #[error("{path}: {source} (check that the parent exists and is writable)")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A path that must be a directory is something else.
    #[error("{0} exists and is not a directory; move it away and run init again")]
    NotADirectory(PathBuf),
}

/// What `init` did, path by path.
#[derive(Debug, Default, Clone)]
pub struct InitReport {
    /// Directories created.
    pub created: Vec<PathBuf>,
    /// Built-in links created.
    pub linked: Vec<PathBuf>,
    /// Built-in links that led to another (or a missing) ingot binary, pointed at this one,
    /// with where they led before.
    pub repaired: Vec<(PathBuf, PathBuf)>,
    /// Built-in links already in place.
    pub unchanged: Vec<PathBuf>,
    /// Paths left alone, with why (a user's file, or a link to another program).
    pub kept: Vec<(PathBuf, String)>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Every built-in as `(subdirectory, name)`: facts then resources.
pub fn builtins() -> Vec<(&'static str, &'static str)> {
    builtin::facts::FACTS
        .iter()
        .map(|(n, _)| ("facts", *n))
        .chain(builtin::resources().iter().map(|r| ("resources", r.kind())))
        .collect()
}

/// Lays out the minion tree at `dir` with every built-in fact and resource as a symlink to
/// `exe` (the running `ingot`). Safe to re-run: existing directories and links stay; a user's
/// files are never overwritten. Links this command made that lead elsewhere (to an `ingot`
/// binary at another path, or nowhere because the binary moved) are repaired: pointed at
/// `exe` again. A link to another program is the user's and stays. `_force` is accepted for
/// callers written when repairing needed it; it changes nothing.
pub fn init(dir: &Path, exe: &Path, _force: bool) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    mkdir(dir, 0o755, &mut report)?;
    for d in DIRS {
        let mode = if *d == "certs" { 0o700 } else { 0o755 };
        mkdir(&dir.join(d), mode, &mut report)?;
    }
    for (sub, name) in builtins() {
        let link = dir.join(sub).join(name);
        match fs::symlink_metadata(&link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                place_link(exe, &link)?;
                report.linked.push(link);
            }
            Err(e) => return Err(io_err(&link)(e)),
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&link).map_err(io_err(&link))?;
                if target == exe {
                    report.unchanged.push(link);
                } else if is_ingot(&target) || !link.exists() {
                    // Ours: made by an earlier init, for a binary now elsewhere or gone.
                    place_link(exe, &link)?;
                    report.repaired.push((link, target));
                } else {
                    report.kept.push((
                        link,
                        format!(
                            "a link to {} (not ingot): kept as the user's",
                            target.display()
                        ),
                    ));
                }
            }
            Ok(_) => report.kept.push((link, "a user's file: kept".into())),
        }
    }
    Ok(report)
}

/// The words that mark a fact failure or error as a built-in link leading nowhere: the master
/// recognises them in a fact failure ([`is_broken_link`]), wherever the minion is.
const BROKEN_LINK: &str = "is a built-in link to a missing ingot binary";

/// The target of `path` when it is a built-in's link that leads nowhere: a dangling symlink
/// named like a built-in, or pointing at a file named like `ingot`. `None` for anything else
/// (a working link, a file, a dangling link of the user's).
pub fn dangling_builtin(path: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() || fs::metadata(path).is_ok() {
        return None;
    }
    let target = fs::read_link(path).ok()?;
    let name = path.file_name()?.to_str()?;
    let builtin_name = builtins().iter().any(|(_, n)| *n == name);
    (builtin_name || is_ingot(&target)).then_some(target)
}

/// Why the built-in link at `link` (in `MINION/facts/` or `MINION/resources/`) cannot run, and
/// what repairs it.
pub fn broken_link_reason(link: &Path, target: &Path) -> String {
    let minion = link
        .parent()
        .and_then(Path::parent)
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "DIR".into());
    format!(
        "{} {BROKEN_LINK} ({} was moved or removed); re-run `ingot init minion {minion}` to point the built-ins at the current ingot",
        link.display(),
        target.display(),
    )
}

/// Whether a fact failure's reason is [`broken_link_reason`]'s.
pub fn is_broken_link(reason: &str) -> bool {
    reason.contains(BROKEN_LINK)
}

fn is_ingot(target: &Path) -> bool {
    target
        .file_name()
        .map(|n| n.to_string_lossy().starts_with("ingot"))
        .unwrap_or(false)
}

fn mkdir(path: &Path, mode: u32, report: &mut InitReport) -> Result<(), InitError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(InitError::NotADirectory(path.to_owned())),
        Err(_) => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .map_err(io_err(path))?;
            // The umask may have narrowed the mode; certs/ must be exactly 0700.
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))?;
            report.created.push(path.to_owned());
            Ok(())
        }
    }
}

/// Creates (or atomically replaces) a symlink.
fn place_link(exe: &Path, link: &Path) -> Result<(), InitError> {
    let tmp = link.with_file_name(format!(
        ".{}.ingot-{}",
        link.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(exe, &tmp).map_err(io_err(&tmp))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(link)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangling_builtin_links_are_recognised_and_repaired_by_init() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let exe = tmp.path().join("bin/ingot");
        init(&dir, &exe, false).unwrap();
        // `exe` does not exist: every built-in link dangles.
        let os = dir.join("facts/os");
        let target = dangling_builtin(&os).expect("a dangling built-in");
        assert_eq!(target, exe);
        let reason = broken_link_reason(&os, &target);
        assert!(is_broken_link(&reason), "{reason}");
        assert!(
            reason.contains(&format!("re-run `ingot init minion {}`", dir.display())),
            "{reason}"
        );
        // A user's dangling link under another name, and a file, are not built-ins.
        std::os::unix::fs::symlink("/nowhere/tool", dir.join("facts/mine")).unwrap();
        assert_eq!(dangling_builtin(&dir.join("facts/mine")), None);
        std::fs::write(dir.join("facts/plain"), "x").unwrap();
        assert_eq!(dangling_builtin(&dir.join("facts/plain")), None);
        assert!(!is_broken_link("exited with code 3"));

        // Init with another binary repairs them without --force; a link elsewhere stays.
        let user = dir.join("resources/user");
        fs::remove_file(&user).unwrap();
        std::os::unix::fs::symlink("/bin/true", &user).unwrap();
        let exe2 = std::env::current_exe().unwrap();
        let r = init(&dir, &exe2, false).unwrap();
        assert_eq!(r.repaired.len(), builtins().len() - 1, "{r:?}");
        assert!(r.linked.is_empty());
        assert_eq!(r.kept.len(), 1, "{r:?}");
        assert_eq!(fs::read_link(&os).unwrap(), exe2);
        assert_eq!(fs::read_link(&user).unwrap(), Path::new("/bin/true"));
        assert_eq!(dangling_builtin(&os), None);
        let again = init(&dir, &exe2, false).unwrap();
        assert!(again.repaired.is_empty() && again.unchanged.len() == builtins().len() - 1);
    }
}
