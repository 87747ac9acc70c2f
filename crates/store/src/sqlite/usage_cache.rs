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
//! Rows whose committed usage the writer has not written to `usage_rollups` yet come from the
//! writer's rollups (see `rollups`): a reader takes them after the generation and before it reads
//! the database, and [`merge`] keeps for each row whichever has more events (counts only grow, so
//! that one is newer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::UsageRollup;

/// Entries kept at most; the cache is emptied when it would grow past this.
const MAX_ENTRIES: usize = 100_000;

type Fast = foldhash::fast::RandomState;

#[derive(Default)]
struct Inner {
    generation: u64,
    len: usize,
    /// customer → billed period start → rollups.
    map: HashMap<String, HashMap<i64, Arc<Vec<UsageRollup>>, Fast>, Fast>,
}

/// What a reader finds in the cache.
pub(crate) enum Lookup {
    Hit(Arc<Vec<UsageRollup>>),
    /// Read the database, [`merge`] the writer's unwritten rows in, and
    /// [`UsageCache::insert`] with this generation.
    Miss(u64),
}

/// Rows read from the database with the writer's unwritten rows laid over them: for each
/// `(metric, usage period)` the row with more events wins. Sorted like the database read.
pub(crate) fn merge(mut rows: Vec<UsageRollup>, unwritten: Vec<UsageRollup>) -> Vec<UsageRollup> {
    for u in unwritten {
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached rollups, or the generation to read them with.
    pub fn get(&self, customer: &str, billed: i64) -> Lookup {
        let inner = self.lock();
        match inner.map.get(customer).and_then(|m| m.get(&billed)) {
            Some(v) => Lookup::Hit(v.clone()),
            None => Lookup::Miss(inner.generation),
        }
    }

    /// Caches rollups read since [`UsageCache::get`] returned `generation`, unless a commit
    /// happened in between.
    pub fn insert(
        &self,
        customer: String,
        billed: i64,
        generation: u64,
        rows: Arc<Vec<UsageRollup>>,
    ) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.len >= MAX_ENTRIES {
            inner.map.clear();
            inner.len = 0;
        }
        if inner
            .map
            .entry(customer)
            .or_default()
            .insert(billed, rows)
            .is_none()
        {
            inner.len += 1;
        }
    }

    /// Called by the writer after every group, before answering it: starts a new generation and
    /// removes the entries the group changed.
    pub fn invalidate(&self) -> Invalidation<'_> {
        let mut inner = self.lock();
        inner.generation = inner.generation.wrapping_add(1);
        if inner.generation == u64::MAX {
            inner.generation = 0;
        }
        Invalidation { inner }
    }
}

/// See [`UsageCache::invalidate`].
pub(crate) struct Invalidation<'a> {
    inner: std::sync::MutexGuard<'a, Inner>,
}

impl Invalidation<'_> {
    pub fn remove(&mut self, customer: &str, billed: i64) {
        let inner = &mut *self.inner;
        if let Some(m) = inner.map.get_mut(customer) {
            if m.remove(&billed).is_some() {
                inner.len -= 1;
            }
        }
    }
}
