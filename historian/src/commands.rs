//! `ingot history`: list, show, follow, export, prune and stats over a [`Store`].

use std::io::{IsTerminal, Write};
use std::time::Duration;

use channel3::Timestamp;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::model::{EventRow, ListFilter, PruneFilter, RunStatus, RunSummary, StepOutcome};
use crate::render::{self, Palette};
use crate::{Error, Location, Result, Store};

/// `ingot history` options.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The history: an SQLite file or a postgres:// URL (default: $INGOT_HISTORY, else the
    /// master tree's, see --master).
    #[arg(long, global = true, value_name = "PATH|URL")]
    pub history: Option<String>,
    /// The master tree whose history to read (MASTER/logs/history.db). Default: the master
    /// tree the working directory is in, else /var/lib/ingot/master when it has a history,
    /// else $XDG_STATE_HOME/ingot/history.db (where `ingot run` records).
    #[arg(long, global = true, value_name = "DIR", env = "INGOT_MASTER")]
    pub master: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: HistoryCommand,
}

/// The `ingot history` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum HistoryCommand {
    /// Runs, newest first, with counts and durations.
    List {
        /// Only runs with this status.
        #[arg(long, value_enum)]
        status: Option<RunStatus>,
        /// Only runs involving this minion.
        #[arg(long)]
        minion: Option<String>,
        /// Only runs started within this long ago (e.g. 30m, 2h, 7d).
        #[arg(long, value_parser = parse_age)]
        since: Option<Duration>,
        /// Only runs with a step on this resource kind.
        #[arg(long)]
        resource: Option<String>,
        /// At most this many runs (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One run as a tree: minion → step → process → output lines.
    Show {
        /// A run id (or unique prefix), or `last`.
        #[arg(default_value = "last")]
        run: String,
        /// Failed minions and steps first.
        #[arg(long)]
        failed: bool,
        /// Write the run's channel3 frames exactly as received (netstrings) instead of the tree.
        #[arg(long)]
        raw: bool,
        /// JSON instead of the tree.
        #[arg(long)]
        json: bool,
    },
    /// Live tail of a run another process is writing (default: the newest run).
    Follow {
        /// A run id (or unique prefix), or `last`.
        run: Option<String>,
        /// How often to poll.
        #[arg(long, default_value = "200ms", value_parser = parse_age, hide = true)]
        interval: Duration,
    },
    /// A run as JSON lines: the run, its steps, its events (raw bytes as `raw_b64`).
    Export {
        /// A run id (or unique prefix), or `last`.
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// Deletes old runs with their steps and events.
    Prune {
        /// Runs started longer ago than this (e.g. 30d).
        #[arg(long, value_parser = parse_age, required = true)]
        older_than: Duration,
        /// Only runs with these statuses (default: every finished run).
        #[arg(long, value_enum, value_delimiter = ',')]
        status: Vec<RunStatus>,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Totals, slowest steps, failure counts by resource and minion.
    Stats {
        /// How many rows per table.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON document per line.
    Jsonl,
}

fn parse_age(s: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use a duration such as 90s, 2h, 30d)"))
}

/// Runs `ingot history` with stdout; returns the exit code. A closed pipe (`| head`) is success.
pub fn main(args: HistoryArgs) -> Result<i32> {
    let location = crate::location::for_review(args.history.as_deref(), args.master.as_deref());
    let stdout = std::io::stdout();
    let color = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut out = stdout.lock();
    match run(&location, args.command, &mut out, Palette { color }) {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        other => other,
    }
}

/// Runs one `ingot history` command against `location`, writing to `out`.
pub fn run(
    location: &Location,
    command: HistoryCommand,
    out: &mut dyn Write,
    style: Palette,
) -> Result<i32> {
    let mut store = Store::open(location)?;
    match command {
        HistoryCommand::List {
            status,
            minion,
            since,
            resource,
            limit,
            json,
        } => {
            let filter = ListFilter {
                status,
                minion,
                since: since.map(ago),
                resource,
                limit,
            };
            let runs = store.list(&filter)?;
            if json {
                write_json(out, &runs)?;
            } else {
                out.write_all(render::runs_table(&runs, style).as_bytes())?;
            }
        }
        HistoryCommand::Show {
            run,
            failed,
            raw,
            json,
        } => {
            let detail = store.detail(&run)?;
            if json {
                let doc = serde_json::json!({
                    "run": detail.run,
                    "steps": detail.steps,
                    "events": detail.events.iter().map(EventJson::from).collect::<Vec<_>>(),
                });
                write_json(out, &doc)?;
            } else if raw {
                let mut buf = Vec::new();
                for e in &detail.events {
                    channel3::netstring::encode_into(&e.raw_or_rebuilt(), &mut buf);
                }
                out.write_all(&buf)?;
            } else {
                out.write_all(render::run_tree(&detail, failed, style).as_bytes())?;
            }
            out.flush()?;
            return Ok(if detail.run.status == RunStatus::Failed {
                1
            } else {
                0
            });
        }
        HistoryCommand::Follow { run, interval } => follow(&mut store, run, interval, out)?,
        HistoryCommand::Export { run, format } => {
            let ExportFormat::Jsonl = format;
            export(&mut store, &run, out)?;
        }
        HistoryCommand::Prune {
            older_than,
            status,
            dry_run,
            json,
        } => {
            let filter = PruneFilter {
                before: ago(older_than),
                statuses: status,
            };
            let report = store.prune(&filter, dry_run)?;
            if json {
                write_json(out, &report)?;
            } else {
                let verb = if dry_run { "would delete" } else { "deleted" };
                writeln!(
                    out,
                    "{verb} {} runs, {} steps, {} events",
                    report.runs.len(),
                    report.steps,
                    report.events
                )?;
                if dry_run {
                    for r in &report.runs {
                        writeln!(out, "  {r}")?;
                    }
                }
            }
        }
        HistoryCommand::Stats { top, json } => {
            let stats = store.stats(top)?;
            if json {
                write_json(out, &stats)?;
            } else {
                out.write_all(render::stats(&stats).as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn ago(d: Duration) -> Timestamp {
    Timestamp(Timestamp::now().0 - d.as_micros().min(i64::MAX as u128) as i64)
}

fn write_json(out: &mut dyn Write, v: &impl Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(|e| Error::Io(e.into()))?;
    out.write_all(b"\n")?;
    Ok(())
}

/// An event as exported: data as JSON, raw frame bytes (when received) as base64.
#[derive(Serialize)]
pub struct EventJson<'a> {
    seq: i64,
    minion: &'a str,
    step: Option<i64>,
    name: Option<&'a str>,
    ts: Timestamp,
    key: &'a str,
    data: DataJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_b64: Option<String>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataJson<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

impl<'a> From<&'a EventRow> for EventJson<'a> {
    fn from(e: &'a EventRow) -> Self {
        use base64::Engine as _;
        let data = match serde_json::from_str::<&RawValue>(&e.data) {
            Ok(raw) => DataJson::Json(raw),
            Err(_) => DataJson::Text(&e.data),
        };
        Self {
            seq: e.seq,
            minion: &e.minion,
            step: e.step,
            name: e.name.as_deref(),
            ts: e.ts,
            key: &e.key,
            data,
            raw_b64: e
                .raw
                .as_ref()
                .map(|r| base64::engine::general_purpose::STANDARD.encode(r)),
        }
    }
}

fn export(store: &mut Store, selector: &str, out: &mut dyn Write) -> Result<()> {
    let run = store.find(selector)?;
    let line = |out: &mut dyn Write, kind: &str, v: &dyn erased::Ser| -> Result<()> {
        let mut doc = v.to_value();
        if let serde_json::Value::Object(m) = &mut doc {
            m.insert("type".into(), kind.into());
        }
        serde_json::to_writer(&mut *out, &doc).map_err(|e| Error::Io(e.into()))?;
        out.write_all(b"\n")?;
        Ok(())
    };
    line(out, "run", &run)?;
    for s in store.steps(&run)? {
        line(out, "step", &s)?;
    }
    let mut after = 0;
    loop {
        let page = store.events_after(&run, after, 10_000)?;
        for e in &page {
            line(out, "event", &EventJson::from(e))?;
        }
        match page.last() {
            Some(e) => after = e.seq,
            None => return Ok(()),
        }
    }
}

mod erased {
    /// Object-safe "serialize to a JSON value".
    pub trait Ser {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

fn follow(
    store: &mut Store,
    selector: Option<String>,
    interval: Duration,
    out: &mut dyn Write,
) -> Result<()> {
    let mut run = match selector {
        Some(s) => store.find(&s)?,
        None => newest_running(store)?,
    };
    writeln!(
        out,
        "following run {} ({})",
        run.id,
        render::date_time(run.started_us)
    )?;
    out.flush()?;
    let mut after = 0;
    let mut steps_seen: Vec<(i64, StepOutcome)> = Vec::new();
    loop {
        let page = store.events_after(&run, after, 10_000)?;
        for e in &page {
            out.write_all(render::event_line(e).as_bytes())?;
        }
        if let Some(e) = page.last() {
            after = e.seq;
        }
        for s in store.steps(&run)? {
            if s.outcome != StepOutcome::Running && !steps_seen.contains(&(s.no, s.outcome)) {
                steps_seen.push((s.no, s.outcome));
                writeln!(
                    out,
                    "step {} {} {} on {}: {}",
                    s.no, s.kind, s.action, s.minion, s.outcome
                )?;
            }
        }
        out.flush()?;
        if page.is_empty() {
            if run.status != RunStatus::Running {
                writeln!(
                    out,
                    "run {} {} after {}",
                    run.id,
                    run.status,
                    render::duration(run.duration())
                )?;
                return Ok(());
            }
            std::thread::sleep(interval);
            // Refresh after sleeping and read once more, so events written just before the run
            // finished are never missed.
            run = store.refresh(&run)?;
        }
    }
}

fn newest_running(store: &mut Store) -> Result<RunSummary> {
    let running = store.list(&ListFilter {
        status: Some(RunStatus::Running),
        limit: 1,
        ..ListFilter::default()
    })?;
    match running.into_iter().next() {
        Some(r) => Ok(r),
        None => store.find("last"),
    }
}
