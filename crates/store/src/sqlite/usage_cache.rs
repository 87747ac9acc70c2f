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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::UsageRollup;

/// Entries kept at most; the cache is emptied when it would grow past this.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Inner {
    generation: u64,
    map: HashMap<(String, i64), Arc<Vec<UsageRollup>>>,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct UsageCache {
    inner: Mutex<Inner>,
}

impl UsageCache {
    /// The cached rollups, or the generation to give to [`UsageCache::insert`] after reading.
    pub fn get(&self, customer: &str, billed: i64) -> Result<Arc<Vec<UsageRollup>>, u64> {
        let Ok(inner) = self.inner.lock() else {
            return Err(u64::MAX);
        };
        // The tuple key needs an owned String to look up; customers ids are short.
        match inner.map.get(&(customer.to_owned(), billed)) {
            Some(v) => Ok(v.clone()),
            None => Err(inner.generation),
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

    /// Called by the writer after every group (committed or not) that wrote rollups, before
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
