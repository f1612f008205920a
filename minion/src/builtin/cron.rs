//! The `cron` resource: a named entry in a user's crontab, managed through the real `crontab`
//! command (`crontab -l -u USER` to read, `crontab -u USER -` to install).
//!
//! Desired state: `name` (identity), `user` (whose crontab; default: the user running the
//! resource), `schedule` (five fields such as `"*/5 * * * *"`, or `@reboot`, `@daily`, ...),
//! `command` (one line; `%` keeps its crontab meaning), and `state` (`present` | `absent`,
//! default `present`).
//!
//! Each owned entry is two lines, a marker comment and the job:
//!
//! ```text
//! # ingot: NAME
//! SCHEDULE COMMAND
//! ```
//!
//! Every other line of the crontab (comments, environment settings, entries ingot does not
//! own) is left exactly as it was. The crontab is only rewritten when its content changes.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::user::common::{self, diff, parse, Presence, Tool};
use super::{Resource, ResourceError};

const KIND: &str = "cron";
const MARKER: &str = "# ingot: ";
const KEYWORDS: &[&str] = &[
    "@reboot",
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// The `cron` resource.
pub struct Cron;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CronState {
    name: String,
    user: Option<String>,
    root: Option<std::path::PathBuf>,
    schedule: Option<String>,
    command: Option<String>,
    #[serde(default)]
    state: Presence,
}

/// A parsed desired state with its user resolved and its schedule normalised.
struct Desired {
    name: String,
    user: String,
    /// An alternate root: the crontab is the file in its spool, not the host's.
    root: Option<std::path::PathBuf>,
    schedule: Option<String>,
    command: Option<String>,
    state: Presence,
}

fn current_user() -> Result<String, ResourceError> {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Ok(u.name),
        _ => Err(ResourceError::Failed(format!(
            "the current user (uid {uid}) has no name in the user database; give `user` explicitly"
        ))),
    }
}

/// The five fields of a schedule: name, lowest and highest value, the names it also takes.
const FIELDS: [(&str, u16, u16, &[&str]); 5] = [
    ("minute", 0, 59, &[]),
    ("hour", 0, 23, &[]),
    ("day of month", 1, 31, &[]),
    (
        "month",
        1,
        12,
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    ),
    (
        "day of week",
        0,
        7,
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    ),
];

/// The parser of standard (Vixie) five-field schedules: no seconds, no year.
fn parser() -> croner::parser::CronParser {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// Why field `i` (`value`) is not one cron takes, or `None` when it is.
fn field_problem(i: usize, value: &str) -> Option<String> {
    let (name, lo, hi, names) = FIELDS[i];
    let range = match names {
        [] => format!("{lo}-{hi}"),
        [first, .., last] => format!("{lo}-{hi} or {first}-{last}"),
        [only] => format!("{lo}-{hi} or {only}"),
    };
    // Vixie cron's syntax: numbers, `*`, `,`, `-`, `/`, and names only in month and day of
    // week. Quartz's extensions (`L`, `W`, `#`, `?`), which the parser also knows, are refused:
    // cron would not run such a line.
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "*,-/".contains(*c)))
    {
        return Some(format!(
            "{name} {value:?} has {c:?}, which cron does not take (use numbers {range}, `*`, `,`, `-` and `/`)"
        ));
    }
    for token in value.split([',', '-', '/']) {
        if token.chars().any(|c| c.is_ascii_alphabetic())
            && !names.contains(&token.to_ascii_lowercase().as_str())
        {
            return Some(format!(
                "{name} {value:?}: {token:?} is not a {name} (use {range})"
            ));
        }
    }
    let mut probe = ["*"; 5];
    probe[i] = value;
    let err = parser().parse(&probe.join(" ")).err()?;
    // The common mistake first: a number out of range (steps, after `/`, are not values).
    for part in value.split(',') {
        let values = part.split('/').next().unwrap_or_default();
        for n in values.split('-').filter_map(|t| t.parse::<u32>().ok()) {
            if n < u32::from(lo) || n > u32::from(hi) {
                return Some(format!("{name} {n} is out of range {range}"));
            }
        }
    }
    let why = err.to_string();
    let why = why
        .strip_prefix("Component error: ")
        .unwrap_or(&why)
        .trim_end_matches('.');
    let mut chars = why.chars();
    let why = chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect::<String>())
        .unwrap_or_default();
    Some(format!(
        "{name} {value:?} is not valid: {why} (use {range})"
    ))
}

/// Normalises and checks a schedule: five fields that cron takes, or one `@` keyword; single
/// spaces.
fn normalise_schedule(s: &str) -> Result<String, ResourceError> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    let bad = |why: String| ResourceError::input("/schedule", why);
    match fields.as_slice() {
        [k] if KEYWORDS.contains(k) => {}
        f if f.len() == 5 => {
            if let Some(why) = f.iter().enumerate().find_map(|(i, v)| field_problem(i, v)) {
                return Err(bad(format!("{s:?} is not a cron schedule: {why}")));
            }
            // Each field is fine alone; the parser has the last word on the whole.
            if let Err(e) = parser().parse(&f.join(" ")) {
                return Err(bad(format!("{s:?} is not a cron schedule: {e}")));
            }
        }
        _ => {
            return Err(bad(format!(
                "{s:?} is not a cron schedule: use five fields (minute hour day-of-month month day-of-week, e.g. \"*/5 * * * *\") or one of {}",
                KEYWORDS.join(", ")
            )))
        }
    }
    Ok(fields.join(" "))
}

impl Desired {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let s: CronState = parse(KIND, state)?;
        if s.name.trim().is_empty()
            || s.name.chars().any(|c| c.is_control())
            || s.name.trim() != s.name
        {
            return Err(ResourceError::input(
                "/name",
                "must be non-empty, one line, without leading or trailing spaces",
            ));
        }
        let user = match s.user {
            Some(u) => {
                common::check_name("/user", &u)?;
                u
            }
            None => current_user()?,
        };
        let schedule = s.schedule.as_deref().map(normalise_schedule).transpose()?;
        let command = match s.command {
            Some(c) => {
                let c = c.trim().to_string();
                if c.is_empty() || c.contains('\n') || c.contains('\r') {
                    return Err(ResourceError::input(
                        "/command",
                        "must be one non-empty line (use a script for anything longer)",
                    ));
                }
                Some(c)
            }
            None => None,
        };
        if let Some(r) = &s.root {
            if !r.is_absolute() {
                return Err(ResourceError::input(
                    "/root",
                    "must be an absolute directory path",
                ));
            }
        }
        Ok(Self {
            name: s.name,
            user,
            root: s.root,
            schedule,
            command,
            state: s.state,
        })
    }
}

/// The `-u USER` option, which unprivileged users may not pass even for themselves.
fn crontab_user_args(user: &str) -> Result<Vec<String>, ResourceError> {
    if nix::unistd::geteuid().is_root() || current_user()? != user {
        Ok(vec!["-u".into(), user.into()])
    } else {
        Ok(Vec::new())
    }
}

/// The user's crontab as lines (empty when there is none).
/// The spool file holding `user`'s crontab under an alternate root (Debian's layout). The
/// `crontab` command only knows the host's spool, so under a root the file is handled directly.
fn spool_file(root: &std::path::Path, user: &str) -> std::path::PathBuf {
    root.join("var/spool/cron/crontabs").join(user)
}

fn read_entries(d: &Desired) -> Result<Vec<String>, ResourceError> {
    let Some(root) = &d.root else {
        return read_crontab(&d.user);
    };
    let path = spool_file(root, &d.user);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ResourceError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_entries(d: &Desired, lines: &[String]) -> Result<(), ResourceError> {
    let Some(root) = &d.root else {
        return write_crontab(&d.user, lines);
    };
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let path = spool_file(root, &d.user);
    let io = |source| ResourceError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().expect("a spool file has a parent");
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut text = lines.join("\n");
    text.push('\n');
    // Atomic replace: a temporary file in the same directory, fsynced, renamed over the old one.
    let tmp = dir.join(format!(".{}.ingot-tmp.{}", d.user, std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

fn read_crontab(user: &str) -> Result<Vec<String>, ResourceError> {
    let tool = Tool::new("crontab")
        .args(crontab_user_args(user)?)
        .arg("-l")
        .hint("install cron (Debian: apt-get install cron); managing another user's crontab needs root");
    let out = tool.outcome()?;
    if out.ok() {
        return Ok(out.stdout.lines().map(str::to_string).collect());
    }
    if out.stderr.contains("no crontab for") {
        return Ok(Vec::new());
    }
    Err(tool.error(&out))
}

fn write_crontab(user: &str, lines: &[String]) -> Result<(), ResourceError> {
    let mut text = lines.join("\n");
    text.push('\n');
    Tool::new("crontab")
        .args(crontab_user_args(user)?)
        .arg("-")
        .stdin(text)
        .hint("check that the user exists and may use cron (cron.allow/cron.deny); managing another user's crontab needs root")
        .run()
        .map(drop)
}

/// An owned entry: where its marker is, and its job line (if any).
struct Entry {
    marker: usize,
    job: Option<usize>,
}

fn is_marker(line: &str) -> bool {
    line.starts_with(MARKER)
}

fn entries(lines: &[String], name: &str) -> Vec<Entry> {
    let mut found = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.strip_prefix(MARKER).map(str::trim_end) == Some(name) {
            let job = lines
                .get(i + 1)
                .filter(|n| !is_marker(n) && !n.trim().is_empty())
                .map(|_| i + 1);
            found.push(Entry { marker: i, job });
        }
    }
    found
}

/// Splits a job line into schedule and command.
fn split_job(line: &str) -> (String, String) {
    let trimmed = line.trim_start();
    let n = if trimmed.starts_with('@') { 1 } else { 5 };
    let mut rest = trimmed;
    let mut fields = Vec::new();
    for _ in 0..n {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        fields.push(&r[..end]);
        rest = &r[end..];
    }
    (fields.join(" "), rest.trim().to_string())
}

fn observe_lines(d: &Desired, lines: &[String]) -> Value {
    let mut o = Map::new();
    o.insert("kind".into(), json!(KIND));
    o.insert("name".into(), json!(d.name));
    o.insert("user".into(), json!(d.user));
    if let Some(r) = &d.root {
        o.insert("root".into(), json!(r));
    }
    let mut changes = Map::new();
    let found = entries(lines, &d.name);
    let job = found
        .first()
        .and_then(|e| e.job)
        .map(|j| split_job(&lines[j]));
    match job {
        None => {
            o.insert("exists".into(), json!(false));
            o.insert("state".into(), json!("absent"));
            diff(
                &mut changes,
                "state",
                &json!("absent"),
                &json!(d.state.as_str()),
            );
        }
        Some((schedule, command)) => {
            o.insert("exists".into(), json!(true));
            o.insert("state".into(), json!("present"));
            diff(
                &mut changes,
                "state",
                &json!("present"),
                &json!(d.state.as_str()),
            );
            if d.state == Presence::Present {
                if let Some(s) = &d.schedule {
                    diff(&mut changes, "schedule", &json!(schedule), &json!(s));
                }
                if let Some(c) = &d.command {
                    diff(&mut changes, "command", &json!(command), &json!(c));
                }
                if found.len() > 1 {
                    diff(&mut changes, "count", &json!(found.len()), &json!(1));
                }
            }
            o.insert("schedule".into(), json!(schedule));
            o.insert("command".into(), json!(command));
        }
    }
    common::with_changes(o, changes)
}

fn conform(d: &Desired) -> Result<Value, ResourceError> {
    if d.state == Presence::Present && (d.schedule.is_none() || d.command.is_none()) {
        return Err(ResourceError::input(
            if d.schedule.is_none() {
                "/schedule"
            } else {
                "/command"
            },
            "a present cron entry needs both schedule and command",
        ));
    }
    let lines = read_entries(d)?;
    let found = entries(&lines, &d.name);
    let mut drop = vec![false; lines.len()];
    for e in &found {
        drop[e.marker] = true;
        if let Some(j) = e.job {
            drop[j] = true;
        }
    }
    let insert_at = found.first().map(|e| e.marker);
    let mut new = Vec::with_capacity(lines.len() + 2);
    let block = match (d.state, &d.schedule, &d.command) {
        (Presence::Present, Some(s), Some(c)) => {
            Some([format!("{MARKER}{}", d.name), format!("{s} {c}")])
        }
        _ => None,
    };
    for (i, l) in lines.iter().enumerate() {
        if Some(i) == insert_at {
            if let Some(b) = &block {
                new.extend(b.iter().cloned());
            }
        }
        if !drop[i] {
            new.push(l.clone());
        }
    }
    if insert_at.is_none() {
        if let Some(b) = &block {
            new.extend(b.iter().cloned());
        }
    }
    if new != lines {
        write_entries(d, &new)?;
    }
    Ok(observe_lines(d, &read_entries(d)?))
}

impl Resource for Cron {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "A named entry in a user's crontab, managed with the crontab command; entries ingot does not own are left untouched."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "cron",
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "pattern": "^\\S(.*\\S)?$", "description": "Names the entry; stored as the comment `# ingot: NAME` above the job."},
                "user": {"type": "string", "minLength": 1, "description": "Whose crontab (default: the user running the resource)."},
                "root": {"type": "string", "pattern": "^/", "description": "An alternate root directory: manage ROOT/var/spool/cron/crontabs/USER instead of the host's crontab."},
                "schedule": {"type": "string", "minLength": 1, "description": "Five cron fields (\"*/5 * * * *\") or @reboot, @hourly, @daily, @weekly, @monthly, @yearly."},
                "command": {"type": "string", "minLength": 1, "pattern": "^[^\\n\\r]*$", "description": "The command line (one line)."},
                "state": {"enum": ["present", "absent"], "default": "present"},
            }
        })
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        let d = Desired::parse(desired)?;
        Ok(observe_lines(&d, &read_entries(&d)?))
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        conform(&Desired::parse(desired)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> String {
        match normalise_schedule(s) {
            Err(ResourceError::Input { pointer, message }) => {
                assert_eq!(pointer, "/schedule");
                message
            }
            other => panic!("{s:?}: expected an input error, got {:?}", other.map(drop)),
        }
    }

    #[test]
    fn schedules_cron_takes_are_accepted_and_normalised() {
        for (given, normal) in [
            ("*/5 * * * *", "*/5 * * * *"),
            ("0  3 * * 1-5", "0 3 * * 1-5"),
            (
                "15,45 8-18/2 1,15 jan-jun mon",
                "15,45 8-18/2 1,15 jan-jun mon",
            ),
            ("59 23 31 12 7", "59 23 31 12 7"),
            ("0 0 * DEC Sun", "0 0 * DEC Sun"),
            ("@reboot", "@reboot"),
            ("@daily", "@daily"),
            ("@midnight", "@midnight"),
        ] {
            assert_eq!(normalise_schedule(given).unwrap(), normal, "{given:?}");
        }
    }

    #[test]
    fn bad_schedules_are_refused_naming_what_is_wrong() {
        for (bad, says) in [
            ("99 99 * * *", "minute 99 is out of range 0-59"),
            ("0 24 * * *", "hour 24 is out of range 0-23"),
            ("0 0 0 * *", "day of month 0 is out of range 1-31"),
            ("0 0 * 13 *", "month 13 is out of range 1-12 or jan-dec"),
            ("0 0 * * 8", "day of week 8 is out of range 0-7 or sun-sat"),
            ("0 0 * * 1-9", "day of week 9 is out of range"),
            (
                "*/0 * * * *",
                "minute \"*/0\" is not valid: step cannot be zero",
            ),
            ("5-1 * * * *", "minute \"5-1\" is not valid"),
            ("0 0 L * *", "\"L\" is not a day of month"),
            ("0 0 * * 5#2", "has '#'"),
            ("0 0 ? * *", "has '?'"),
            ("0 0 * foo *", "\"foo\" is not a month"),
            ("x * * * *", "\"x\" is not a minute"),
            ("* * * *", "use five fields"),
            ("0 0 * * * *", "use five fields"),
            ("@sometimes", "use five fields"),
        ] {
            let message = refused(bad);
            assert!(message.contains(says), "{bad:?}: {message}");
        }
    }
}
