//! Reading what a program printed: the end of its stderr, the start of its stdout.

/// `": "` and the last five lines of `stderr`, or nothing when it is blank.
pub(super) fn tail_suffix(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = t.lines().collect();
        let start = lines.len().saturating_sub(5);
        format!(": {}", lines[start..].join("\n"))
    }
}

/// The last line of `s`, trimmed.
pub(super) fn last_line(s: &str) -> String {
    s.trim().lines().last().unwrap_or_default().to_owned()
}

/// The start of `bytes` (120 characters at most), quoted; `(empty output)` when blank.
pub(super) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    if t.is_empty() {
        return "(empty output)".into();
    }
    let mut s: String = t.chars().take(120).collect();
    if t.chars().count() > 120 {
        s.push('…');
    }
    format!("{s:?}")
}
