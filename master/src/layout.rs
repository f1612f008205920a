//! `ingot init master`: the master tree.

use std::path::PathBuf;

/// Where a master tree lives when no `--master` is given.
pub const DEFAULT_DIR: &str = "/var/lib/ingot/master";

/// ` --master DIR` (quoted for a shell) for a hint to paste, or nothing for the default tree.
pub fn master_flag(master: &std::path::Path) -> String {
    if master == std::path::Path::new(DEFAULT_DIR) {
        String::new()
    } else {
        format!(
            " --master {}",
            shell_words::quote(&master.to_string_lossy())
        )
    }
}

/// `ingot init master DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitMasterArgs {
    /// The directory to lay out (created if missing).
    pub dir: PathBuf,
}

/// Lays out a master tree; safe to re-run (existing files are left alone).
pub fn init_master(args: &InitMasterArgs) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    for (sub, mode) in [
        ("logs", 0o755),
        ("certs", 0o700),
        ("actors", 0o755),
        ("resources", 0o755),
    ] {
        let path = args.dir.join(sub);
        let existed = path.is_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&path)?;
        if sub == "certs" {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        println!(
            "{} {}",
            if existed { "exists " } else { "created" },
            path.display()
        );
    }
    let prescribe = args.dir.join("actors/prescribe");
    if !prescribe.exists() {
        println!(
            "next: write {} (reads facts on stdin, prints a JSON array of resource states)",
            prescribe.display()
        );
    }
    Ok(())
}
