//! The agent's spool: one slot file per request, holding its frames until the master has
//! stored the result (see the module documentation of [`super`]).

use std::collections::HashMap;
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::wire::Frame;

/// Frames on their way to the master's connection (encoded netstrings).
pub(super) type Wire = tokio::sync::mpsc::UnboundedSender<Vec<u8>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running request's frames: to its spool slot, and live to the master when connected.
pub(super) struct Outbox {
    pub(super) file: Option<std::fs::File>,
    pub(super) path: PathBuf,
    pub(super) seq: u64,
    pub(super) live: Option<Wire>,
}

impl Outbox {
    pub(super) fn push(&mut self, make: impl FnOnce(u64) -> Frame) {
        self.seq += 1;
        let frame = make(self.seq);
        let payload = frame.payload();
        if let Some(f) = self.file.as_mut() {
            let mut line = payload.clone();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!(path = %self.path.display(), "spooling: {e}");
            }
        }
        if let Some(w) = &self.live {
            if w.send(channel3::netstring::encode(&payload)).is_err() {
                self.live = None;
            }
        }
    }
}

/// The events of one request, into its outbox.
pub(super) struct OutboxSink(pub(super) Arc<Mutex<Outbox>>, pub(super) String);

impl runner::EventSink for OutboxSink {
    fn emit(&self, ev: channel3::Event) {
        let id = self.1.clone();
        lock(&self.0).push(|seq| Frame::Event {
            id,
            seq,
            ts: ev.ts.0,
            name: ev.message.name,
            key: ev.message.key,
            data: ev.message.data,
        });
    }
}

/// The spool directory's slots: which request holds which file, and which are free.
pub(super) struct Spool {
    dir: PathBuf,
    pub(super) held: HashMap<String, PathBuf>,
    free: Vec<PathBuf>,
    next: u64,
}

impl Spool {
    /// Reads the slots left by an earlier run: empty ones are free, the others are held by
    /// the request their first frame names.
    pub(super) fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut spool = Self {
            dir,
            held: HashMap::new(),
            free: Vec::new(),
            next: 0,
        };
        for e in std::fs::read_dir(&spool.dir)?.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".jsonl") {
                continue;
            }
            if let Some(n) = name
                .strip_prefix("slot-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                spool.next = spool.next.max(n + 1);
            }
            match slot_frames(&path) {
                Some((id, _)) => {
                    spool.held.insert(id, path);
                }
                None => spool.free.push(path),
            }
        }
        Ok(spool)
    }

    /// A slot for request `id`, named by its first line and open for writing after it.
    pub(super) fn take(&mut self, id: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        let path = match self.free.pop() {
            Some(p) => p,
            None => {
                self.next += 1;
                self.dir.join(format!("slot-{}.jsonl", self.next - 1))
            }
        };
        // Not truncated (see the module documentation): what follows is written over.
        #[allow(clippy::suspicious_open_options)]
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .open(&path);
        // The first line names the request, so a slot whose request never got to print
        // anything is still reported interrupted after a crash.
        let file = file.and_then(|mut f| {
            f.write_all(&slot_header(Some(id)))?;
            Ok(f)
        });
        match file {
            Ok(f) => {
                self.held.insert(id.to_owned(), path.clone());
                Ok((path, f))
            }
            Err(e) => {
                self.free.push(path);
                Err(e)
            }
        }
    }

    /// The master has the result of `id`: its slot is marked free and reused.
    pub(super) fn release(&mut self, id: &str) {
        if let Some(path) = self.held.remove(id) {
            let freed = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&slot_header(None)));
            match freed {
                Ok(()) => self.free.push(path),
                Err(e) => tracing::warn!(path = %path.display(), "emptying a spool slot: {e}"),
            }
        }
    }

    /// Held slots, by request id.
    pub(super) fn held(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = self
            .held
            .iter()
            .map(|(i, p)| (i.clone(), p.clone()))
            .collect();
        out.sort();
        out
    }
}

/// The width of a slot's first line, so that freeing a slot rewrites it in place: a
/// `{"spooled":ID}` with the longest valid id fits.
const SLOT_HEADER_LEN: usize = 160;

/// A slot's first line: the request holding it, or `None` for a free slot.
fn slot_header(id: Option<&str>) -> Vec<u8> {
    let mut line = json!({ "spooled": id }).to_string().into_bytes();
    line.resize(line.len().max(SLOT_HEADER_LEN - 1), b' ');
    line.push(b'\n');
    line
}

/// The request holding a slot and its frames (in the order written), or `None` for a free
/// slot. Lines left from an earlier request, or torn by a crash, are not its frames.
pub(super) fn slot_frames(path: &Path) -> Option<(String, Vec<String>)> {
    let mut lines = read_lines(path).into_iter();
    let first = lines.next()?;
    let id = frame_id(&first)?;
    let mine = |l: &String| {
        serde_json::from_str::<Frame>(l).is_ok_and(|f| match f {
            Frame::Event { id: i, .. } | Frame::Result { id: i, .. } => i == id,
            _ => false,
        })
    };
    let frames = std::iter::once(first)
        .chain(lines)
        .filter(|l| mine(l))
        .collect();
    Some((id, frames))
}

/// The request id a spool slot's first line names.
fn frame_id(line: &str) -> Option<String> {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
        if let Some(Value::String(id)) = m.get("spooled") {
            return Some(id.clone());
        }
    }
    match serde_json::from_str::<Frame>(line).ok()? {
        Frame::Event { id, .. } | Frame::Result { id, .. } => Some(id),
        _ => None,
    }
}

pub(super) fn is_result(line: &str) -> bool {
    serde_json::from_str::<Frame>(line)
        .map(|f| matches!(f, Frame::Result { .. }))
        .unwrap_or(false)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn send_lines(path: &Path, tx: &Wire) {
    for line in slot_frames(path).map(|(_, f)| f).unwrap_or_default() {
        let _ = tx.send(channel3::netstring::encode(line.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, seq: u64, line: &str) -> Vec<u8> {
        let mut b = Frame::Event {
            id: id.into(),
            seq,
            ts: 1,
            name: Some("run".into()),
            key: "stdout".into(),
            data: serde_json::value::to_raw_value(&json!({ "line": line })).unwrap(),
        }
        .payload();
        b.push(b'\n');
        b
    }

    #[test]
    fn a_reused_slot_holds_only_its_own_requests_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().join("spool")).unwrap();
        let (path, mut f) = spool.take("first").unwrap();
        for seq in 1..=3 {
            f.write_all(&event("first", seq, &"long output ".repeat(20)))
                .unwrap();
        }
        drop(f);
        spool.release("first");
        assert!(slot_frames(&path).is_none(), "a released slot is free");
        assert!(Spool::open(dir.path().join("spool"))
            .unwrap()
            .held
            .is_empty());

        // Reused: written over from the start, shorter than what was there.
        let (again, mut f) = spool.take("second").unwrap();
        assert_eq!(again, path, "the free slot is reused");
        f.write_all(&event("second", 1, "short")).unwrap();
        drop(f);
        let (id, frames) = slot_frames(&path).unwrap();
        assert_eq!(id, "second");
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].contains("short"));
        let reopened = Spool::open(dir.path().join("spool")).unwrap();
        assert_eq!(reopened.held.get("second"), Some(&path));
    }
}
