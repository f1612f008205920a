//! `ingot completions SHELL` and `ingot man`: the scripts shells load and the page `man` reads,
//! checked with bash and man themselves.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{ingot, output};

fn stdout_of(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = output(ingot(tmp.path()).args(args));
    assert!(out.status.success(), "ingot {args:?} failed");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn bash_completion_is_valid_and_completes_subcommands() {
    let tmp = tempfile::tempdir().unwrap();
    let text = stdout_of(&["completions", "bash"]);
    let file = tmp.path().join("ingot.bash");
    std::fs::write(&file, &text).unwrap();

    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n refused the script: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The line that registers the completion function for `ingot`.
    let function = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("complete -F ")?;
            l.split_whitespace()
                .last()
                .filter(|cmd| *cmd == "ingot")
                .and(rest.split_whitespace().next())
        })
        .unwrap_or_else(|| panic!("no `complete -F FUNCTION ... ingot` line in:\n{text}"));

    // What bash does on `ingot ap<TAB>`: COMP_WORDS/COMP_CWORD set, the function called with
    // the command, the word being completed and the one before.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source \"$1\"\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n{function} ingot '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            words = words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Command::new("bash")
            .args(["-c", &script, "complete"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "completing {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let offered = complete("ingot ap");
    assert_eq!(offered, ["apply"], "ingot ap<TAB>");
    let offered = complete("ingot init ");
    assert!(
        offered.iter().any(|w| w == "minion") && offered.iter().any(|w| w == "master"),
        "ingot init <TAB>: {offered:?}"
    );
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let text = stdout_of(&["completions", shell]);
        for sub in ["apply", "history", "facts", "completions", "man"] {
            assert!(
                text.contains(sub),
                "{shell} completion lacks {sub}:\n{text}"
            );
        }
    }
    let text = stdout_of(&["completions", "zsh"]);
    assert!(text.starts_with("#compdef ingot"), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let out = output(ingot(tmp.path()).args(["completions", "tcsh"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_is_roff_for_ingot_and_man_renders_it() {
    let page = stdout_of(&["man"]);
    let th = page
        .lines()
        .find(|l| l.starts_with(".TH"))
        .unwrap_or_else(|| panic!("no .TH line:\n{page}"));
    assert!(th.starts_with(".TH ingot 1"), "{th}");
    assert!(
        page.lines()
            .take_while(|l| !l.starts_with(".TH"))
            .all(|l| !l.starts_with(".SH")),
        "the .TH line comes before any section"
    );
    for sub in ["apply", "history", "completions"] {
        assert!(page.contains(sub), "the page lists {sub}");
    }

    if !Path::new("/usr/bin/man").exists() {
        println!("skipped: rendering with man -l: /usr/bin/man is not installed (Debian: man-db)");
        return;
    }
    let mut child = Command::new("/usr/bin/man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "man -l - failed: {err}");
    assert!(
        !err.contains("warning") && !err.contains("error"),
        "man complained: {err}"
    );
    assert!(text.contains("NAME") && text.contains("ingot"), "{text}");
    assert!(text.contains("apply"), "{text}");
}
