//! Turning stored records into safe, readable text: tables, the run tree, event lines.
//!
//! Everything that came from a process is untrusted: control characters and invalid UTF-8 are
//! escaped (a stored escape sequence can never drive the terminal) and long lines are cut.

use std::fmt::Write as _;
use std::time::Duration;

use channel3::{Body, Timestamp};
use comfy_table::{presets, Cell, Table};
use serde_json::value::RawValue;

use crate::model::{EventRow, RunStatus, RunSummary, Stats, StepOutcome, StepRow};
use crate::store::RunDetail;

/// Longest text shown for one event line in the tree (the rest is in `--json`/`export`).
pub const MAX_SHOWN: usize = 2000;

/// Output options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Palette {
    /// ANSI colours.
    pub color: bool,
}

impl Palette {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    fn status(&self, s: RunStatus) -> String {
        let code = match s {
            RunStatus::Failed => "31;1",
            RunStatus::Changed => "33",
            RunStatus::Ok => "32",
            RunStatus::Running => "36",
            RunStatus::Interrupted => "35",
            RunStatus::Drift => "33;1",
        };
        self.paint(code, s.as_str())
    }

    fn outcome(&self, o: StepOutcome) -> String {
        let code = match o {
            StepOutcome::Failed => "31;1",
            StepOutcome::Changed | StepOutcome::WouldChange => "33",
            StepOutcome::Unchanged => "32",
            StepOutcome::Running => "36",
        };
        self.paint(code, o.as_str())
    }
}

/// Escapes bytes for a terminal: printable UTF-8 as is, `\n`, `\t`, `\r`, other control
/// characters as `\u{..}`, invalid bytes as `\xNN`; cut after `max` characters.
pub fn safe_text(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0usize;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown >= max {
                return cut(out, bytes.len());
            }
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() || is_bidi(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
            shown += 1;
        }
        for b in chunk.invalid() {
            if shown >= max {
                return cut(out, bytes.len());
            }
            let _ = write!(out, "\\x{b:02x}");
            shown += 1;
        }
    }
    out
}

fn cut(mut out: String, total: usize) -> String {
    let _ = write!(out, "… [{total} bytes in all]");
    out
}

/// Characters that reorder text on a terminal (Trojan-source style).
fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// The text of an event: a line's bytes (trailing newline dropped), else the data as JSON.
pub fn event_text(e: &EventRow, max: usize) -> String {
    let body = match serde_json::from_str::<Box<RawValue>>(&e.data) {
        Ok(raw) => Body::parse(&e.key, &raw),
        Err(_) => return safe_text(e.data.as_bytes(), max),
    };
    match body {
        Body::Stdin(l) | Body::Stdout(l) | Body::Stderr(l) | Body::Garbage(l) => {
            let bytes = l.bytes();
            let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            let binary = std::str::from_utf8(bytes).is_err();
            let text = safe_text(bytes, max);
            if binary {
                format!("[binary] {text}")
            } else {
                text
            }
        }
        _ => safe_text(e.data.as_bytes(), max),
    }
}

/// `12:34:56.789012` (UTC).
pub fn clock(ts: Timestamp) -> String {
    let s = ts.to_string();
    s.get(11..26).unwrap_or(&s).to_owned()
}

/// `2026-11-21 12:34:56Z`.
pub fn date_time(ts: Timestamp) -> String {
    let s = humantime::format_rfc3339_seconds(ts.to_system_time()).to_string();
    s.replacen('T', " ", 1)
}

/// `850ms`, `1.25s`, `3m02s`, `2h05m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

fn short_id(id: &str) -> &str {
    id.get(..18).unwrap_or(id)
}

fn shell_line(argv: &[String], max: usize) -> String {
    let joined = argv
        .iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    safe_text(joined.as_bytes(), max)
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_HORIZONTAL_ONLY);
    t
}

/// The table of `history list`.
pub fn runs_table(runs: &[RunSummary], style: Palette) -> String {
    if runs.is_empty() {
        return "no runs recorded (matching these filters)\n".into();
    }
    let mut t = table();
    t.set_header(vec![
        "RUN", "STARTED", "DURATION", "STATUS", "USER", "MINIONS", "STEPS", "CHANGED", "FAILED",
        "EVENTS", "COMMAND",
    ]);
    for r in runs {
        let minions = match r.minions.len() {
            0..=3 => r.minions.join(","),
            n => format!("{},… ({n})", r.minions[..2].join(",")),
        };
        t.add_row(vec![
            Cell::new(short_id(&r.id)),
            Cell::new(date_time(r.started_us)),
            Cell::new(duration(r.duration())),
            Cell::new(style.status(r.status)),
            Cell::new(safe_text(r.user.as_bytes(), 32)),
            Cell::new(safe_text(minions.as_bytes(), 40)),
            Cell::new(r.steps),
            Cell::new(r.changed),
            Cell::new(r.failed),
            Cell::new(r.events),
            Cell::new(shell_line(&r.command, 60)),
        ]);
    }
    format!("{t}\n")
}

/// The tree of `history show`: minion → step → process → lines. With `failed_first`, failed
/// minions and steps come before the others.
pub fn run_tree(d: &RunDetail, failed_first: bool, style: Palette) -> String {
    let mut out = String::new();
    let r = &d.run;
    let _ = writeln!(
        out,
        "run {}  {}  by {}  started {}  took {}",
        r.id,
        style.status(r.status),
        safe_text(r.user.as_bytes(), 64),
        date_time(r.started_us),
        duration(r.duration()),
    );
    let _ = writeln!(out, "  command: {}", shell_line(&r.command, MAX_SHOWN));
    if !r.targets.is_empty() {
        let _ = writeln!(out, "  targets: {}", shell_line(&r.targets, MAX_SHOWN));
    }
    let _ = writeln!(
        out,
        "  {} steps, {} changed, {} failed, {} events",
        r.steps, r.changed, r.failed, r.events
    );
    if let Some(reason) = &r.reason {
        let text = safe_text(reason.as_bytes(), 4000).replace('\n', "\n    ");
        let _ = writeln!(out, "  {}: {text}", style.status(r.status));
    }
    for minion in minion_order(d, failed_first) {
        let _ = writeln!(
            out,
            "{}",
            style.paint(
                "1",
                &format!("minion {}", safe_text(minion.as_bytes(), 200))
            )
        );
        let mut steps: Vec<&StepRow> = d.steps.iter().filter(|s| s.minion == minion).collect();
        if failed_first {
            steps.sort_by_key(|s| (s.outcome != StepOutcome::Failed, s.no));
        }
        for s in steps {
            step_header(&mut out, s, style);
            processes(&mut out, d, &minion, Some(s.no), "    ");
        }
        let loose = d
            .events
            .iter()
            .any(|e| e.minion == minion && e.step.is_none());
        if loose {
            let _ = writeln!(out, "  (outside any step)");
            processes(&mut out, d, &minion, None, "    ");
        }
    }
    out
}

fn minion_order(d: &RunDetail, failed_first: bool) -> Vec<String> {
    let mut minions: Vec<String> = Vec::new();
    let seen = d
        .steps
        .iter()
        .map(|s| &s.minion)
        .chain(d.events.iter().map(|e| &e.minion));
    for m in seen {
        if !minions.contains(m) {
            minions.push(m.clone());
        }
    }
    if failed_first {
        let failed = |m: &String| {
            d.steps
                .iter()
                .any(|s| &s.minion == m && s.outcome == StepOutcome::Failed)
        };
        minions.sort_by_key(|m| !failed(m));
    }
    minions
}

fn step_header(out: &mut String, s: &StepRow, style: Palette) {
    let took = s
        .duration_us
        .map(|us| duration(Duration::from_micros(us.max(0) as u64)))
        .unwrap_or_else(|| "…".into());
    let _ = writeln!(
        out,
        "  step {} {} {}  {}  {}",
        s.no,
        safe_text(s.kind.as_bytes(), 100),
        safe_text(s.action.as_bytes(), 100),
        style.outcome(s.outcome),
        took
    );
    if let Some(desired) = &s.desired {
        let _ = writeln!(
            out,
            "    desired: {}",
            safe_text(desired.to_string().as_bytes(), 300)
        );
    }
    if let Some(e) = &s.error {
        let _ = writeln!(
            out,
            "    {} {}",
            style.paint("31", "error:"),
            safe_text(e.as_bytes(), MAX_SHOWN)
        );
    }
}

fn processes(out: &mut String, d: &RunDetail, minion: &str, step: Option<i64>, indent: &str) {
    let events: Vec<&EventRow> = d
        .events
        .iter()
        .filter(|e| e.minion == minion && e.step == step)
        .collect();
    let mut names: Vec<Option<&str>> = Vec::new();
    for e in &events {
        if !names.contains(&e.name.as_deref()) {
            names.push(e.name.as_deref());
        }
    }
    for name in names {
        let label = name.map_or("(writer)".into(), |n| safe_text(n.as_bytes(), 200));
        let _ = writeln!(out, "{indent}process {label}");
        for e in events.iter().filter(|e| e.name.as_deref() == name) {
            let _ = writeln!(
                out,
                "{indent}  {} {:<8} {}",
                clock(e.ts),
                safe_text(e.key.as_bytes(), 40),
                event_text(e, MAX_SHOWN)
            );
        }
    }
}

/// One line per event for `history follow`.
pub fn event_line(e: &EventRow) -> String {
    let step = e.step.map(|s| format!(" step {s}")).unwrap_or_default();
    format!(
        "{} {}{} {} {}: {}\n",
        clock(e.ts),
        safe_text(e.minion.as_bytes(), 100),
        step,
        e.name
            .as_deref()
            .map_or("-".into(), |n| safe_text(n.as_bytes(), 200)),
        safe_text(e.key.as_bytes(), 40),
        event_text(e, MAX_SHOWN)
    )
}

/// The tables of `history stats`.
pub fn stats(s: &Stats) -> String {
    let mut out = String::new();
    let by_status = s
        .by_status
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "{} runs ({}), {} steps, {} events",
        s.runs,
        if by_status.is_empty() {
            "none".into()
        } else {
            by_status
        },
        s.steps,
        s.events
    );
    if !s.slowest.is_empty() {
        let mut t = table();
        t.set_header(vec!["SLOWEST STEPS", "MINION", "ACTION", "DURATION", "RUN"]);
        for x in &s.slowest {
            t.add_row(vec![
                safe_text(x.kind.as_bytes(), 60),
                safe_text(x.minion.as_bytes(), 60),
                safe_text(x.action.as_bytes(), 60),
                duration(Duration::from_micros(x.duration_us.max(0) as u64)),
                short_id(&x.run).to_owned(),
            ]);
        }
        let _ = writeln!(out, "\n{t}");
    }
    for (title, rows) in [
        ("FAILURES BY RESOURCE", &s.failures_by_resource),
        ("FAILURES BY MINION", &s.failures_by_minion),
    ] {
        if rows.is_empty() {
            continue;
        }
        let mut t = table();
        t.set_header(vec![title, "FAILED", "STEPS"]);
        for f in rows {
            t.add_row(vec![
                safe_text(f.name.as_bytes(), 60),
                f.failed.to_string(),
                f.total.to_string(),
            ]);
        }
        let _ = writeln!(out, "\n{t}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_bad_utf8_are_escaped() {
        assert_eq!(safe_text(b"a\x1b[31mb\xff\n", 100), "a\\u{1b}[31mb\\xff\\n");
        assert_eq!(safe_text("x\u{202e}y".as_bytes(), 100), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_cut_with_a_note() {
        let s = safe_text(&[b'a'; 5000], 10);
        assert!(s.starts_with("aaaaaaaaaa…"), "{s}");
        assert!(s.contains("5000 bytes in all"), "{s}");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(duration(Duration::from_secs(182)), "3m02s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h05m");
    }
}
