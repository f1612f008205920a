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
    /// Built-in links created (or refreshed with `--force`).
    pub linked: Vec<PathBuf>,
    /// Built-in links already in place.
    pub unchanged: Vec<PathBuf>,
    /// Paths left alone, with why (a user's file, or a different link without `--force`).
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
/// files are never overwritten. With `force`, links to an `ingot` binary elsewhere (or dangling
/// links) are pointed at `exe` again.
pub fn init(dir: &Path, exe: &Path, force: bool) -> Result<InitReport, InitError> {
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
                } else if force && (is_ingot(&target) || !link.exists()) {
                    place_link(exe, &link)?;
                    report.linked.push(link);
                } else if force {
                    report.kept.push((
                        link,
                        format!(
                            "a link to {} (not ingot): kept as the user's",
                            target.display()
                        ),
                    ));
                } else {
                    report.kept.push((
                        link,
                        format!(
                            "links to {}; use --force to point it at {}",
                            target.display(),
                            exe.display()
                        ),
                    ));
                }
            }
            Ok(_) => report.kept.push((link, "a user's file: kept".into())),
        }
    }
    Ok(report)
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
