//! What the sampler holds while a trace is undecided: references into the held requests (not
//! copies), the open traces, and their interned service names.

use std::collections::HashMap;
use std::ops::Range;

use tokio::time::Instant;

use super::Verdict;
use crate::model::Batch;

/// A request whose spans some open trace still holds. Held spans stay in the request's own
/// buffer: copying them out was most of the hold's cost, since nearly every span is held at 1 %
/// (a trace may still turn out to have an error). Freed when its last open trace is decided.
#[derive(Debug)]
pub(super) struct HeldBatch {
    pub(super) batch: Batch,
    /// Runs of open traces that point into it.
    pub(super) live: u32,
    /// What it counts against `max_held_bytes`: the whole request, however few spans are held.
    pub(super) bytes: usize,
}

/// Consecutive spans of one trace in one held request (`seq` numbers the requests held).
#[derive(Debug, Clone)]
pub(super) struct Run {
    pub(super) seq: u64,
    pub(super) spans: Range<u32>,
}

#[derive(Debug)]
pub(super) struct Open {
    /// Most traces arrive in one run: the first needs no allocation.
    pub(super) first: Option<Run>,
    pub(super) more: Vec<Run>,
    pub(super) error: bool,
    pub(super) slow: bool,
    pub(super) head: Option<Verdict>,
    pub(super) entry_seen: bool,
    pub(super) due: Option<Instant>,
    pub(super) service: u32,
}

impl Open {
    pub(super) fn runs(&self) -> impl Iterator<Item = &Run> {
        self.first.iter().chain(self.more.iter())
    }

    pub(super) fn held_spans(&self) -> usize {
        self.runs().map(|r| r.spans.len()).sum()
    }

    pub(super) fn push_run(&mut self, run: Run) {
        if self.first.is_none() {
            self.first = Some(run);
        } else {
            self.more.push(run);
        }
    }
}

/// Service names of open traces, interned: an open trace carries a number, not a `String`.
#[derive(Debug, Default)]
pub(super) struct Services {
    pub(super) ids: HashMap<Box<str>, u32>,
    pub(super) names: Vec<Box<str>>,
}

/// Distinct service names remembered; past it they share one name (and one rate-limit bucket).
pub(super) const MAX_SERVICE_NAMES: usize = 1024;

impl Services {
    pub(super) fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let name = if self.names.len() + 1 < MAX_SERVICE_NAMES {
            name
        } else {
            "other"
        };
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    pub(super) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}
