//! The read side: queries for `ingot history` and anyone reviewing runs.

use crate::backend::ReadBackend;
use crate::model::{
    EventRow, ListFilter, PruneFilter, PruneReport, RunStep, RunSummary, Stats, StepRow,
};
use crate::{Error, Location, Result};

/// A history open for reading (and pruning). Readers never block the writer.
pub struct Store {
    backend: Box<dyn ReadBackend>,
    location: Location,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A run with its steps and events.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunSummary,
    /// Its steps, in order.
    pub steps: Vec<StepRow>,
    /// Its events, in order.
    pub events: Vec<EventRow>,
}

/// Events fetched per query when reading a whole run.
const PAGE: usize = 10_000;

impl Store {
    /// Opens an existing history (an SQLite file must exist; it is never created here).
    pub fn open(location: &Location) -> Result<Self> {
        let backend: Box<dyn ReadBackend> = match location {
            Location::Sqlite(path) => Box::new(crate::sqlite::Sqlite::open_existing(path)?),
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => Box::new(crate::postgres::Postgres::connect(url)?),
            #[cfg(not(feature = "postgres"))]
            Location::Postgres(_) => return Err(Error::NoPostgres),
        };
        Ok(Self {
            backend,
            location: location.clone(),
        })
    }

    /// Where it reads.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&mut self, filter: &ListFilter) -> Result<Vec<RunSummary>> {
        self.backend.list_runs(filter)
    }

    /// The run named by `selector`: `last` (the newest), a full id or a unique prefix of one.
    pub fn find(&mut self, selector: &str) -> Result<RunSummary> {
        let found = if selector == "last" {
            self.backend.find_runs(None)?
        } else {
            self.backend.find_runs(Some(selector))?
        };
        match found.len() {
            0 => Err(Error::NoSuchRun(selector.to_owned())),
            1 => Ok(found.into_iter().next().expect("one run")),
            _ => Err(Error::Ambiguous(selector.to_owned())),
        }
    }

    /// The run's current record (status, counts) again.
    pub fn refresh(&mut self, run: &RunSummary) -> Result<RunSummary> {
        self.backend
            .run(run.key)?
            .ok_or_else(|| Error::NoSuchRun(run.id.clone()))
    }

    /// The run's steps, in order.
    pub fn steps(&mut self, run: &RunSummary) -> Result<Vec<StepRow>> {
        self.backend.steps(run.key)
    }

    /// At most `limit` events of `run` after position `after` (0 for the start), in order.
    pub fn events_after(
        &mut self,
        run: &RunSummary,
        after: i64,
        limit: usize,
    ) -> Result<Vec<EventRow>> {
        self.backend.events(run.key, after, limit)
    }

    /// All events of a run, in order.
    pub fn events(&mut self, run: &RunSummary) -> Result<Vec<EventRow>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |e: &EventRow| e.seq);
            let page = self.backend.events(run.key, after, PAGE)?;
            let done = page.len() < PAGE;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// The run named by `selector` with its steps and events.
    pub fn detail(&mut self, selector: &str) -> Result<RunDetail> {
        let run = self.find(selector)?;
        let steps = self.steps(&run)?;
        let events = self.events(&run)?;
        Ok(RunDetail { run, steps, events })
    }

    /// Deletes the runs `filter` selects with their steps and events (or, with `dry_run`,
    /// only says what would go). Running runs are kept unless asked for by status.
    pub fn prune(&mut self, filter: &PruneFilter, dry_run: bool) -> Result<PruneReport> {
        self.backend.prune(filter, dry_run)
    }

    /// Totals, the `top` slowest steps and failure counts by resource and minion.
    pub fn stats(&mut self, top: usize) -> Result<Stats> {
        self.backend.stats(top)
    }

    /// Every step whose action is `action` (e.g. the `job` steps of Directord runs), with its
    /// run's id and status: oldest run first, then in step order.
    pub fn steps_with_action(&mut self, action: &str) -> Result<Vec<RunStep>> {
        self.backend.steps_with_action(action)
    }

    /// Deletes the runs with these ids (full ids) with their steps and events. Runs still
    /// running and unknown ids are left alone; the report names what went.
    pub fn delete_runs(&mut self, ids: &[String]) -> Result<PruneReport> {
        self.backend.delete_runs(ids)
    }
}
