//! The rollups of recently read `(customer, billed period)`s, kept in memory so that an
//! entitlement check needs no database read.
//!
//! Only a store holding the ingest lock has one: its writer thread is then the only writer of
//! `usage_rollups` (events are refused by every other process), so it knows every change. After
//! each group commit, and before answering any job of the group, the writer removes the entries it
//! changed and bumps a generation counter. A reader that misses notes the generation, reads the
//! database, and caches what it read only if no commit happened meanwhile (otherwise its snapshot
//! may predate that commit). So a read that starts after a write was acknowledged never sees the
//! rollups from before that write.
//!
//! It also holds the rollup rows the writer has committed events for but not yet written to
//! `usage_rollups` (the writer writes rollups about once a second, see `writer`): a reader takes
//! them together with the generation, before it reads the database, and for each row keeps
//! whichever of the two has the higher event count (counts only grow, so that one is newer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::UsageRollup;

/// Entries kept at most; the cache is emptied when it would grow past this.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Inner {
    generation: u64,
    map: HashMap<(String, i64), Arc<Vec<UsageRollup>>>,
    /// Rows with committed usage not yet in `usage_rollups`, by `(customer, billed period)`.
    unflushed: HashMap<(String, i64), Vec<UsageRollup>>,
}

/// What a reader finds in the cache.
pub(crate) enum Lookup {
    Hit(Arc<Vec<UsageRollup>>),
    /// Read the database, then [`merge`] these rows in and [`UsageCache::insert`] with the
    /// generation.
    Miss {
        generation: u64,
        unflushed: Vec<UsageRollup>,
    },
}

/// Rows read from the database with the writer's unflushed rows laid over them: for each
/// `(metric, usage period)` the row with more events wins. Sorted like the database read.
pub(crate) fn merge(mut rows: Vec<UsageRollup>, unflushed: Vec<UsageRollup>) -> Vec<UsageRollup> {
    for u in unflushed {
        match rows
            .iter_mut()
            .find(|r| r.metric == u.metric && r.usage_period_start == u.usage_period_start)
        {
            Some(r) if u.count > r.count => *r = u,
            Some(_) => {}
            None => rows.push(u),
        }
    }
    rows.sort_by(|a, b| (&a.metric, a.usage_period_start).cmp(&(&b.metric, b.usage_period_start)));
    rows
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct UsageCache {
    inner: Mutex<Inner>,
}

impl UsageCache {
    /// The cached rollups, or what a reader needs to read them from the database.
    pub fn get(&self, customer: &str, billed: i64) -> Lookup {
        let inner = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        // The tuple key needs an owned String to look up; customers ids are short.
        let key = (customer.to_owned(), billed);
        match inner.map.get(&key) {
            Some(v) => Lookup::Hit(v.clone()),
            None => Lookup::Miss {
                generation: inner.generation,
                unflushed: inner.unflushed.get(&key).cloned().unwrap_or_default(),
            },
        }
    }

    /// Caches rollups read from the database since [`UsageCache::get`] returned `generation`,
    /// unless a commit happened in between.
    pub fn insert(
        &self,
        customer: String,
        billed: i64,
        generation: u64,
        rows: Arc<Vec<UsageRollup>>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= MAX_ENTRIES {
            inner.map.clear();
        }
        inner.map.insert((customer, billed), rows);
    }

    /// Called by the writer after a commit: `set` are rows with committed usage not yet written
    /// to `usage_rollups`, `written` the keys `(customer, billed, metric, usage period)` whose
    /// rows now are. `clear` forgets every unflushed row (the database holds them all).
    pub fn publish(
        &self,
        set: Vec<(String, UsageRollup)>,
        written: &[(String, i64, String, i64)],
        clear: bool,
    ) {
        if set.is_empty() && written.is_empty() && !clear {
            return;
        }
        let mut inner = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        if clear {
            inner.unflushed.clear();
        }
        for (customer, row) in set {
            let billed = row.billed_period_start.timestamp_millis();
            let rows = inner.unflushed.entry((customer, billed)).or_default();
            match rows
                .iter_mut()
                .find(|r| r.metric == row.metric && r.usage_period_start == row.usage_period_start)
            {
                Some(r) => *r = row,
                None => rows.push(row),
            }
        }
        for (customer, billed, metric, usage_ps) in written {
            let key = (customer.clone(), *billed);
            if let Some(rows) = inner.unflushed.get_mut(&key) {
                rows.retain(|r| {
                    &r.metric != metric || r.usage_period_start.timestamp_millis() != *usage_ps
                });
                if rows.is_empty() {
                    inner.unflushed.remove(&key);
                }
            }
        }
    }

    /// Called by the writer after every group (committed or not) that changed rollups, before
    /// answering it.
    pub fn invalidate(&self, touched: &mut Vec<(String, i64)>) {
        if touched.is_empty() {
            return;
        }
        let mut inner = match self.inner.lock() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        inner.generation = inner.generation.wrapping_add(1);
        if inner.generation == u64::MAX {
            inner.generation = 0;
        }
        for k in touched.drain(..) {
            inner.map.remove(&k);
        }
    }
}
