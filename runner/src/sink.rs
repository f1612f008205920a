//! Where events go.

use std::io::Write;
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use channel3::{Body, Event, Message};

/// Receives the events of runs. Called from async tasks: implementations must not block for
/// long (hand slow work to a thread, as [`ThreadSink`] does).
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}

impl EventSink for tokio::sync::mpsc::UnboundedSender<Event> {
    fn emit(&self, event: Event) {
        // A closed receiver means nobody listens any more; dropping the event is right.
        let _ = self.send(event);
    }
}

/// Drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _: Event) {}
}

/// Keeps every event in memory (tests and small tools).
#[derive(Debug, Default)]
pub struct Collect(Mutex<Vec<Event>>);

impl Collect {
    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The messages so far, without timestamps.
    pub fn messages(&self) -> Vec<Message> {
        self.events().into_iter().map(|e| e.message).collect()
    }
}

impl EventSink for Collect {
    fn emit(&self, event: Event) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// How a [`ThreadSink`] writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// channel3 netstrings (for a parent runner reading our fd 3, or an events file).
    Channel3,
    /// One readable, timestamped line per event (for a terminal).
    Text,
}

/// Writes events to a blocking writer from its own thread, so a slow reader never stalls the
/// async runner. Dropping it (or [`ThreadSink::close`]) flushes everything.
pub struct ThreadSink {
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ThreadSink {
    /// Starts the writer thread.
    pub fn new<W: Write + Send + 'static>(mut out: W, format: WireFormat) -> Self {
        let (tx, rx) = mpsc::channel::<Event>();
        let thread = std::thread::spawn(move || {
            let mut buf = Vec::new();
            for event in rx {
                buf.clear();
                match format {
                    WireFormat::Channel3 => event.message.encode_into(&mut buf),
                    WireFormat::Text => format_text(&event, &mut buf),
                }
                if out.write_all(&buf).and_then(|_| out.flush()).is_err() {
                    // The reader went away (EPIPE); keep draining so senders never block.
                    continue;
                }
            }
        });
        Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Flushes every event sent so far and stops the thread.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl EventSink for ThreadSink {
    fn emit(&self, event: Event) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(event);
        }
    }
}

impl Drop for ThreadSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// `TIME NAME KEY TEXT`, with lines shown as text (trailing newline dropped, non-UTF-8 escaped)
/// and other data as JSON.
pub fn format_text(event: &Event, out: &mut Vec<u8>) {
    let m = &event.message;
    let name = m.name.as_deref().unwrap_or("-");
    let text = match m.body() {
        Body::Stdin(l) | Body::Stdout(l) | Body::Stderr(l) | Body::Garbage(l) => {
            let bytes = l.bytes();
            let s = String::from_utf8_lossy(&bytes);
            s.strip_suffix('\n')
                .unwrap_or(&s)
                .escape_debug()
                .to_string()
        }
        _ => m.data.get().to_owned(),
    };
    let _ = writeln!(out, "{} {name} {}: {text}", event.ts, m.key);
}
