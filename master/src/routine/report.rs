//! What the operator sees: live progress lines, the recap, failure blocks and check-mode diffs.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use crate::routine::documents::is_meta_field;
use crate::routine::{MinionReport, MinionStatus, StepReport, StepStatus};

/// ANSI colours, or none when the output is not a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colours when `tty` and `NO_COLOR` is unset.
    pub fn new(tty: bool) -> Self {
        Self {
            color: tty && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// Colours for stderr.
    pub fn stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// Colours for stdout.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout().is_terminal())
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Green.
    pub fn good(&self, t: &str) -> String {
        self.paint("32", t)
    }
    /// Yellow.
    pub fn change(&self, t: &str) -> String {
        self.paint("33", t)
    }
    /// Red.
    pub fn bad(&self, t: &str) -> String {
        self.paint("31", t)
    }
    /// Dim.
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    /// Bold.
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }

    /// Colours an outcome word.
    pub fn outcome(&self, word: &str) -> String {
        match word {
            "ok" => self.good(word),
            "failed" => self.bad(word),
            w if w.starts_with("left out") => self.bad(w),
            _ => self.change(word),
        }
    }
}

/// One progress line: `minion  action  resource  outcome`.
pub fn progress_line(
    style: &Style,
    minion: &str,
    what: &str,
    resource: &str,
    outcome: &str,
) -> String {
    format!(
        "{} {:<9} {} {}",
        style.dim(minion),
        what,
        resource,
        style.outcome(outcome)
    )
}

/// The recap table, failure blocks, and (in check mode) the planned steps with diffs.
pub fn recap(reports: &[MinionReport], check: bool, style: &Style) -> String {
    let mut out = String::new();
    if check {
        for r in reports {
            for s in r
                .steps
                .iter()
                .filter(|s| s.outcome == StepStatus::WouldChange)
            {
                out.push_str(&planned_step(r, s, style));
            }
        }
    }
    for r in reports {
        if let Some(e) = &r.error {
            let label = match r.status {
                MinionStatus::Interrupted => "INTERRUPTED",
                _ => "FAILED",
            };
            out.push_str(&format!(
                "{} {}\n  {}\n\n",
                style.bad(label),
                style.bold(&r.minion),
                e.replace('\n', "\n  ")
            ));
        }
        for s in r.steps.iter().filter(|s| s.outcome == StepStatus::Failed) {
            out.push_str(&format!(
                "{} {}: {} ({}, round {})\n  {}\n\n",
                style.bad("FAILED"),
                style.bold(&r.minion),
                s.resource,
                s.action,
                s.round,
                s.error
                    .as_deref()
                    .unwrap_or("failed")
                    .trim_end()
                    .replace('\n', "\n  ")
            ));
        }
    }
    let width = reports
        .iter()
        .map(|r| r.minion.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let pending_col = if check { " pending" } else { "" };
    out.push_str(&style.bold(&format!(
        "{:<width$}  status   ok changed failed skipped{pending_col}  duration\n",
        "minion"
    )));
    for r in reports {
        let c = r.counts();
        let status = match r.status {
            MinionStatus::Ok => style.good("ok     "),
            MinionStatus::Changed => style.change("changed"),
            MinionStatus::Pending => style.change("pending"),
            MinionStatus::Failed => style.bad("failed "),
            MinionStatus::Interrupted => style.bad("stopped"),
        };
        let pending = if check {
            format!(" {:>7}", c["pending"])
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<width$}  {status} {:>4} {:>7} {:>6} {:>7}{pending}  {:>7.2}s\n",
            r.minion,
            c["ok"],
            c["changed"],
            c["failed"],
            c["skipped"],
            r.duration.as_secs_f64()
        ));
    }
    out
}

fn planned_step(r: &MinionReport, s: &StepReport, style: &Style) -> String {
    let mut out = format!(
        "{} {} {} ({})\n",
        style.change("~"),
        style.dim(&r.minion),
        style.bold(&s.resource),
        s.action
    );
    if s.action == "conform" {
        for line in diff_lines(&s.state, s.before.as_ref(), style) {
            out.push_str("    ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push('\n');
    out
}

fn show(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "(absent)".into(),
        Some(v) => v.to_string(),
    }
}

/// Field-by-field differences between the desired state and the observation: a unified diff for
/// text content, `observed → desired` for other fields, and no values for sensitive fields.
pub fn diff_lines(desired: &Value, observed: Option<&Value>, style: &Style) -> Vec<String> {
    let Some(fields) = desired.as_object() else {
        return Vec::new();
    };
    let sensitive = runner::redact::sensitive_fields(desired);
    let empty = Value::Null;
    let observed = observed.unwrap_or(&empty);
    let changes = observed.get("changes").and_then(Value::as_object);
    let mut lines = Vec::new();
    if observed.get("exists") == Some(&Value::Bool(false)) {
        lines.push(style.change("(does not exist yet: will be created)"));
    }
    for (field, want) in fields {
        if is_meta_field(field) {
            continue;
        }
        let changed = match changes {
            Some(c) => c.contains_key(field),
            None => observed.get(field) != Some(want),
        };
        if !changed {
            continue;
        }
        if sensitive.contains(field) {
            lines.push(format!("{field}: (sensitive value changes)"));
            continue;
        }
        let reported = changes.and_then(|c| c.get(field));
        let have = observed
            .get(field)
            .or_else(|| reported.and_then(|c| c.get("observed")));
        // A unified diff needs the real observed text, not a digest from `changes`.
        match (want.as_str(), observed.get(field).and_then(Value::as_str)) {
            (Some(w), Some(h)) if field == "content" || w.contains('\n') || h.contains('\n') => {
                lines.push(format!("{field}:"));
                lines.extend(unified(h, w, style));
            }
            (Some(w), None)
                if field == "content" && observed.get("exists") == Some(&Value::Bool(false)) =>
            {
                lines.push(format!("{field}:"));
                lines.extend(unified("", w, style));
            }
            _ => {
                // Large values are compared by digest: show the digests, not the value.
                let want_shown =
                    match (observed.get(field), reported.and_then(|c| c.get("desired"))) {
                        (None, Some(digest)) => digest,
                        _ => want,
                    };
                lines.push(format!(
                    "{field}: {} → {}",
                    style.bad(&show(have)),
                    style.good(&show(Some(want_shown)))
                ));
            }
        }
    }
    lines
}

fn unified(old: &str, new: &str, style: &Style) -> Vec<String> {
    let diff = similar::TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header("observed", "desired")
        .to_string();
    text.lines()
        .map(|l| {
            if l.starts_with("+++") || l.starts_with("---") {
                style.bold(l)
            } else if l.starts_with('+') {
                style.good(l)
            } else if l.starts_with('-') {
                style.bad(l)
            } else if l.starts_with("@@") {
                style.dim(l)
            } else {
                l.to_owned()
            }
        })
        .collect()
}

/// Prints a progress line on stderr, ignoring a closed pipe.
pub fn eprint_line(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_gets_a_unified_diff_and_other_fields_an_arrow() {
        let st = Style::new(false);
        let d = json!({"kind": "file", "path": "/m", "content": "a\nb\n", "mode": "0640"});
        let o = json!({"path": "/m", "content": "a\nc\n", "mode": "0644"});
        let lines = diff_lines(&d, Some(&o), &st).join("\n");
        assert!(lines.contains("-c") && lines.contains("+b"), "{lines}");
        assert!(lines.contains("mode: \"0644\" → \"0640\""), "{lines}");
        assert!(!lines.contains("path"), "{lines}");
    }

    #[test]
    fn sensitive_fields_show_no_values() {
        let st = Style::new(false);
        let d = json!({"kind": "user", "name": "a", "password": "NEW", "sensitive": ["password"]});
        let o = json!({"name": "a", "password": "OLD"});
        let lines = diff_lines(&d, Some(&o), &st).join("\n");
        assert!(lines.contains("password: (sensitive value changes)"));
        assert!(!lines.contains("NEW") && !lines.contains("OLD"));
    }
}
