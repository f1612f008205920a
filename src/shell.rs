//! `ingot completions SHELL` and `ingot man`: generated from the command line's own definition,
//! so they never fall behind it.

use std::io::Write as _;

use anyhow::Context as _;

/// Prints the completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "ingot", &mut out);
    write_stdout(&out)
}

/// Prints the roff man page of `cmd` (the top command, listing its subcommands).
pub fn man(cmd: clap::Command) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .context("rendering the man page")?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<i32> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(runner::exit::SUCCESS),
        // `ingot man | head`: the reader had enough.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(runner::exit::SUCCESS),
        Err(e) => Err(e).context("writing to stdout"),
    }
}
