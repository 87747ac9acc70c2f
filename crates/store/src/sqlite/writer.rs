//! The single writer thread: drains queued jobs, runs each in a savepoint of one transaction,
//! commits once, then answers every job.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::rollups::{self, Rollups};
use super::usage_cache::UsageCache;
use crate::{Result, StoreError};

/// Most jobs committed together; bounds the latency of the first job of a group.
const MAX_GROUP_JOBS: usize = 512;

/// A unit of work for the writer.
pub(crate) trait WriteJob: Send {
    /// Runs inside the open transaction; `false` means the job failed and its savepoint is rolled
    /// back.
    fn run(&mut self, w: &mut Writer) -> bool;
    /// Answers the caller once the transaction's fate is known.
    fn finish(self: Box<Self>, commit: std::result::Result<(), String>);
    /// Whether the job reads or writes rollups directly (then the group's pending rollup deltas
    /// are written first).
    fn touches_rollups(&self) -> bool;
}

pub(crate) struct FnJob<T, F> {
    f: Option<F>,
    touches_rollups: bool,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> FnJob<T, F> {
    pub fn new(f: F, reply: oneshot::Sender<Result<T>>, touches_rollups: bool) -> Self {
        FnJob {
            f: Some(f),
            touches_rollups,
            result: None,
            reply,
        }
    }
}

impl<T, F> WriteJob for FnJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
{
    fn run(&mut self, w: &mut Writer) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let r = f(w);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), String>) {
        let out = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(m)) => Err(StoreError::Database(m)),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(out);
    }

    fn touches_rollups(&self) -> bool {
        self.touches_rollups
    }
}

/// Passes a 128-bit hash through as the bucket hash (it is already uniformly distributed).
#[derive(Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// Shards of the dedup set: each grows on its own, so a resize copies 1/256 of the set (no pause
/// of the writer and no doubling of the memory at once when a big set grows).
const DEDUP_SHARDS: usize = 256;

/// One shard of the dedup set: open addressing with linear probing over a power-of-two array of
/// the keys themselves (16 bytes a slot, no separate control bytes, so a lookup touches one cache
/// line), at most 80 % full. 0 marks an empty slot; the key 0 is stored as 1 (two distinct events
/// would have to hash to exactly 0 and 1: a chance of 2⁻¹²⁷).
struct KeyTable {
    slots: Vec<u128>,
    /// For each slot, the day (since the epoch, UTC) of the stored event's timestamp: keys are
    /// pruned by day once their events fall out of the deduplication window.
    days: Vec<u16>,
    len: usize,
}

impl KeyTable {
    fn new() -> Self {
        KeyTable {
            slots: vec![0; 16],
            days: vec![0; 16],
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Home slot: the low bits (the shard is chosen by the high ones).
    fn home(&self, key: u128) -> usize {
        key as usize & self.mask()
    }

    /// Asks the CPU to load the key's home slot, so that a batch's lookups overlap their cache
    /// misses instead of waiting for each in turn.
    fn prefetch(&self, key: u128) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot: *const u128 = &self.slots[self.home(key)];
            // SAFETY: a prefetch only hints the cache; the pointer is to a live element.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    slot.cast::<i8>(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    fn insert(&mut self, key: u128, day: u16) -> bool {
        let key = key.max(1);
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = key;
                    self.days[i] = day;
                    self.len += 1;
                    return true;
                }
                k if k == key => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn contains(&self, key: u128) -> bool {
        let key = key.max(1);
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                0 => return false,
                k if k == key => return true,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Removes `key`; `false` when it was not held.
    fn remove(&mut self, key: u128) -> bool {
        let key = key.max(1);
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots[i] {
                0 => return false,
                k if k == key => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward shift: move later keys of the run into the hole when their home allows it.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let k = self.slots[j];
            if k == 0 {
                break;
            }
            let home = self.home(k);
            // `k` may move to `i` when `i` lies cyclically in [home, j).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.slots[i] = k;
                self.days[i] = self.days[j];
                i = j;
            }
        }
        self.slots[i] = 0;
        self.len -= 1;
        true
    }

    fn grow(&mut self) {
        self.rebuild(self.slots.len() * 2, 0);
    }

    /// Moves the keys of days `>= keep_from` into a table of `size` slots (a power of two with
    /// room for them).
    fn rebuild(&mut self, size: usize, keep_from: u16) {
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        let old_days = std::mem::replace(&mut self.days, vec![0; size]);
        let mask = self.mask();
        self.len = 0;
        for (k, d) in old.into_iter().zip(old_days) {
            if k == 0 || d < keep_from {
                continue;
            }
            let mut i = self.home(k);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = k;
            self.days[i] = d;
            self.len += 1;
        }
    }

    /// Forgets the keys of days before `keep_from`, shrinking the table to fit what is left.
    fn prune(&mut self, keep_from: u16) {
        if !self
            .days
            .iter()
            .zip(&self.slots)
            .any(|(d, k)| *k != 0 && *d < keep_from)
        {
            return;
        }
        let kept = self
            .days
            .iter()
            .zip(&self.slots)
            .filter(|(d, k)| **k != 0 && **d >= keep_from)
            .count();
        let mut size = 16;
        while (kept + 1) * 5 > size * 4 {
            size *= 2;
        }
        self.rebuild(size, keep_from);
    }
}

/// The keyed 128-bit hash of `(customer, id)` pairs (SipHash-1-3 with 128-bit output, random keys
/// per process); shared with the store so that callers hash their events before queueing them
/// (off the writer thread).
pub(crate) struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    fn new() -> Self {
        // Random per process: std seeds every RandomState from the OS.
        KeyHasher {
            k0: RandomState::new().hash_one(0u8),
            k1: RandomState::new().hash_one(1u8),
        }
    }

    /// Keyed 128-bit hash of `(customer, event id)`; `str` hashing is prefix-free, so distinct
    /// pairs give distinct inputs.
    pub fn key(&self, customer: &str, event_id: &str) -> u128 {
        use siphasher::sip128::Hasher128;
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.k0, self.k1);
        (customer, event_id).hash(&mut h);
        h.finish128().as_u128()
    }
}

const DAY_MS: i64 = 86_400_000;

/// The day (since the epoch, UTC) of a timestamp in ms, clamped to what a `u16` holds (years
/// 1970–2149).
pub(crate) fn day_of(ts_ms: i64) -> u16 {
    ts_ms.div_euclid(DAY_MS).clamp(0, i64::from(u16::MAX)) as u16
}

/// The deduplication window: events older than `now − window` are refused before they reach the
/// store (by the API), so the writer keeps in memory only the keys of events inside it; the
/// database's unique key on `(customer, event id)` answers any older id sent again.
///
/// `max_keys` bounds the memory: at most that many keys are held (the newest; about 22–45
/// bytes each). The set only spares duplicates a doomed insert: every key it does not hold is
/// inserted with `ON CONFLICT DO NOTHING` on the unique index, so deduplication stays exact with
/// any bound.
///
/// It also carries the rest of the store's memory budget, SQLite's page caches: the writer's
/// (`writer_cache_kib`) and each reader's (`reader_cache_kib`), in KiB. With the defaults a
/// server restarted on a large history stays within 64 MB resident when idle (see the README's
/// Storage section).
#[derive(Clone)]
pub struct DedupWindow {
    pub window: chrono::Duration,
    pub clock: crate::clock::SharedClock,
    pub max_keys: usize,
    pub writer_cache_kib: u32,
    pub reader_cache_kib: u32,
}

impl DedupWindow {
    /// The oldest timestamp (ms) inside the window now.
    pub fn cutoff_ms(&self) -> i64 {
        self.clock
            .now()
            .checked_sub_signed(self.window)
            .map_or(i64::MIN, |t| t.timestamp_millis())
    }
}

impl Default for DedupWindow {
    fn default() -> Self {
        DedupWindow {
            window: crate::DEFAULT_DEDUP_WINDOW,
            clock: crate::clock::Clock::system(),
            max_keys: crate::DEFAULT_DEDUP_MEMORY_KEYS,
            writer_cache_kib: crate::DEFAULT_SQLITE_WRITER_CACHE_KIB,
            reader_cache_kib: crate::DEFAULT_SQLITE_READER_CACHE_KIB,
        }
    }
}

/// The set of `(customer, event id)` keys of the stored events whose timestamp is inside the
/// deduplication window (plus at most the day the window starts in).
pub(crate) struct Dedup {
    shards: Vec<KeyTable>,
    pub hasher: Arc<KeyHasher>,
    window: DedupWindow,
    /// Keys of days before this one have been pruned.
    pruned_before: u16,
    /// A prune in progress: the first day kept and the next shard to prune.
    sweep: Option<(u16, usize)>,
    /// Keys held (all shards).
    held: usize,
}

/// Shards pruned after each group commit while a prune is in progress: a day's prune is spread
/// over 8 groups, so no group waits for a pass over the whole set.
const PRUNE_SHARDS_PER_GROUP: usize = 32;

impl Dedup {
    fn new(window: DedupWindow) -> Self {
        let pruned_before = day_of(window.cutoff_ms());
        Dedup {
            shards: (0..DEDUP_SHARDS).map(|_| KeyTable::new()).collect(),
            hasher: Arc::new(KeyHasher::new()),
            window,
            pruned_before,
            sweep: None,
            held: 0,
        }
    }

    /// Forgets the keys of events whose whole day has left the window, [`PRUNE_SHARDS_PER_GROUP`]
    /// shards a call; a no-op until the window starts a new day (one pass over the set a day).
    /// Keys not yet pruned are only extra: every key inside the window stays.
    pub fn prune(&mut self) {
        let (keep_from, next) = match self.sweep {
            Some(s) => s,
            None => {
                let mut keep_from = day_of(self.window.cutoff_ms());
                if self.held >= self.window.max_keys {
                    // Over the bound: the oldest day held goes early, never today.
                    let today = day_of(self.window.clock.now().timestamp_millis());
                    keep_from = keep_from.max((self.pruned_before + 1).min(today));
                }
                if keep_from <= self.pruned_before {
                    return;
                }
                (keep_from, 0)
            }
        };
        let end = (next + PRUNE_SHARDS_PER_GROUP).min(DEDUP_SHARDS);
        for s in &mut self.shards[next..end] {
            let before = s.len;
            s.prune(keep_from);
            self.held -= before - s.len;
        }
        if end == DEDUP_SHARDS {
            self.pruned_before = keep_from;
            self.sweep = None;
        } else {
            self.sweep = Some((keep_from, end));
        }
    }

    /// Keys held (all shards).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.held
    }

    /// See [`KeyTable::prefetch`].
    pub fn prefetch(&self, key: u128) {
        self.shards[(key >> 120) as usize % DEDUP_SHARDS].prefetch(key);
    }

    pub fn key(&self, customer: &str, event_id: &str) -> u128 {
        self.hasher.key(customer, event_id)
    }

    fn shard(&mut self, key: u128) -> &mut KeyTable {
        &mut self.shards[(key >> 120) as usize % DEDUP_SHARDS]
    }

    /// Adds a key of an event of day `day`; `false` when it was already present. At the bound
    /// a key not present is reported new without being held (the unique index decides).
    pub fn insert(&mut self, key: u128, day: u16) -> bool {
        let full = self.held >= self.window.max_keys;
        let shard = self.shard(key);
        if full {
            return !shard.contains(key);
        }
        let new = shard.insert(key, day);
        if new {
            self.held += 1;
        }
        new
    }

    pub fn remove(&mut self, key: u128) {
        if self.shard(key).remove(key) {
            self.held -= 1;
        }
    }
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    pub conn: Connection,
    /// False for admin stores (no ingest lock, no dedup set).
    pub can_ingest: bool,
    pub dedup: Dedup,
    /// Dedup keys added by jobs of the open transaction, forgotten again if the commit fails.
    pub group_added: Vec<u128>,
    /// Keyed hash of `(customer, idempotency key)` → `seq` of the ledger entry that first used the
    /// key: authoritative for the same reason as `dedup` (only ingesting stores apply credits).
    pub credit_keys: HashMap<u128, i64, BuildHasherDefault<PassThrough>>,
    /// Credit keys added by jobs of the open transaction, forgotten again if the commit fails.
    pub group_credit_keys: Vec<u128>,
    /// The readers' cache of rollups; every `(customer, billed period)` whose rollups the group
    /// changed is invalidated after the commit and before any job of the group is answered.
    pub usage_cache: Option<Arc<UsageCache>>,
    /// Each customer's `billed_through` (ms) as last read; only a period close changes it (and
    /// forgets the entry), so ingest needs no customer read per batch.
    pub billed_through: HashMap<String, Option<i64>, foldhash::fast::RandomState>,
    /// Current value of the rollup rows (see `rollups`), shared with the store's readers (who
    /// only read them: the writer holds the write lock only to change rows in memory, never
    /// across database writes).
    pub rollups: Arc<RwLock<Rollups>>,
    /// The open transaction must write every dirty rollup before it commits (it stored usage a
    /// replay could not rebuild: distinct values of `unique_count` metrics).
    pub write_rollups_now: bool,
    /// When dirty rollups were last written.
    last_write: Instant,
    /// `PRAGMA data_version` at the last group: it changes when another connection commits (an
    /// operator command), and then `billed_through` is read again.
    data_version: i64,
}

/// Consecutive events older than the window after which the start-up load of the dedup set stops.
const LOAD_GIVE_UP: u32 = 100_000;

/// How often changed rollups are written to `usage_rollups` under steady ingest (see `rollups`).
const WRITE_ROLLUPS_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    /// `ingest`: whether this writer may ingest events (then the dedup set is loaded).
    pub fn new(conn: Connection, ingest: bool, window: DedupWindow) -> Result<Writer> {
        let mut dedup = Dedup::new(window);
        if ingest {
            // Only the newest keys of the window (from the start of its first day, like
            // `Dedup::prune`), newest first up to the bound: older ids are answered by the unique
            // key on disk. The scan walks back in storage order and stops at the bound or after a
            // long run of events older than the window (late events are rare), so start-up reads
            // the window's tail, not the history.
            let from = i64::from(dedup.pruned_before) * DAY_MS;
            let mut stmt =
                conn.prepare("SELECT customer_id, event_id, ts FROM events ORDER BY seq DESC")?;
            let mut rows = stmt.query([])?;
            let mut older_in_a_row = 0;
            while let Some(row) = rows.next()? {
                if dedup.held >= dedup.window.max_keys || older_in_a_row >= LOAD_GIVE_UP {
                    break;
                }
                let ts: i64 = row.get(2)?;
                if ts < from {
                    older_in_a_row += 1;
                    continue;
                }
                older_in_a_row = 0;
                let c: String = row.get(0)?;
                let e: String = row.get(1)?;
                let k = dedup.key(&c, &e);
                dedup.insert(k, day_of(ts));
            }
        }
        let mut credit_keys = HashMap::default();
        if ingest {
            let mut stmt = conn.prepare(
                "SELECT seq, customer_id, idempotency_key FROM credit_entries
                 WHERE idempotency_key IS NOT NULL",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let c: String = row.get(1)?;
                let k: String = row.get(2)?;
                credit_keys.insert(dedup.key(&c, &k), seq);
            }
        }
        Ok(Writer {
            conn,
            can_ingest: ingest,
            dedup,
            group_added: Vec::new(),
            credit_keys,
            group_credit_keys: Vec::new(),
            usage_cache: None,
            billed_through: HashMap::default(),
            rollups: Arc::default(),
            write_rollups_now: false,
            last_write: Instant::now(),
            data_version: 0,
        })
        .and_then(|w| {
            if ingest {
                // Usage of events committed after the last rollup write (a crash) is added now.
                w.exec("BEGIN IMMEDIATE")?;
                match rollups::replay(&w.conn) {
                    Ok(()) => w.exec("COMMIT")?,
                    Err(e) => {
                        let _ = w.conn.execute_batch("ROLLBACK");
                        return Err(e);
                    }
                }
            }
            Ok(w)
        })
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<Box<dyn WriteJob>>) {
        let mut jobs: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_GROUP_JOBS);
        // A small runtime of this thread's own, only to wait for jobs with a timeout: dirty
        // rollups are written within about a second even when ingest stops.
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "the SQLite writer cannot start");
                return;
            }
        };
        loop {
            let wait = if self.rollups().dirty_len() == 0 {
                Duration::from_secs(3600)
            } else {
                WRITE_ROLLUPS_EVERY.saturating_sub(self.last_write.elapsed())
            };
            match rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                Ok(Some(first)) => jobs.push(first),
                Ok(None) => break,
                Err(_) => {}
            }
            while jobs.len() < MAX_GROUP_JOBS {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let commit = self.run_group(&mut jobs);
            self.after_commit(commit.is_ok());
            for job in jobs.drain(..) {
                job.finish(commit.clone());
            }
            if self.can_ingest {
                self.dedup.prune();
            }
        }
        // Shutting down: write what is still only in memory (an operator command that never
        // ingested has nothing to write and takes no write lock).
        if self.rollups().dirty_len() > 0 {
            self.write_rollups_now = true;
            let commit = self.run_group(&mut []);
            self.after_commit(commit.is_ok());
            if let Err(e) = commit {
                tracing::warn!(error = %e, "rollups not written at shutdown; rebuilt from the events at the next start");
            }
        }
    }

    /// The rollup rows, to read (a reader that panicked holding them cannot have changed them).
    pub fn rollups(&self) -> RwLockReadGuard<'_, Rollups> {
        self.rollups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The rollup rows, to change (only the writer thread does).
    pub fn rollups_mut(&self) -> RwLockWriteGuard<'_, Rollups> {
        self.rollups.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the group's rollup changes visible to readers (or undoes them if the commit failed),
    /// and invalidates the cached usage they change, before any job is answered: a read that
    /// starts after an acknowledged write never sees the rollups from before it.
    fn after_commit(&mut self, committed: bool) {
        let mut rollups = self.rollups_mut();
        match &self.usage_cache {
            Some(cache) => {
                let mut cached = cache.invalidate();
                rollups.end_group(committed, |customer, billed| {
                    cached.remove(customer, billed)
                });
            }
            None => rollups.end_group(committed, |_, _| {}),
        }
        drop(rollups);
        if !committed {
            self.billed_through.clear();
        }
    }

    /// Writes every dirty rollup row (see `rollups`).
    fn write_dirty(&mut self) -> Result<()> {
        // Readers go on while the rows are written: only the writer changes them.
        self.rollups().write_dirty(&self.conn)?;
        self.rollups_mut().mark_written(&self.conn)?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Reads `billed_through` again when another connection committed since the last group.
    fn check_data_version(&mut self) -> rusqlite::Result<()> {
        let v: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        if v != self.data_version {
            self.data_version = v;
            self.billed_through.clear();
        }
        Ok(())
    }

    /// Runs a parameterless statement through the statement cache.
    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(|_| ())
    }

    fn run_group(&mut self, jobs: &mut [Box<dyn WriteJob>]) -> std::result::Result<(), String> {
        self.group_added.clear();
        self.group_credit_keys.clear();
        self.exec("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
        let mut failed: Option<String> = self.check_data_version().err().map(|e| e.to_string());
        for job in jobs.iter_mut() {
            if failed.is_some() {
                break;
            }
            if job.touches_rollups() {
                if let Err(e) = self.write_dirty() {
                    failed = Some(e.to_string());
                    break;
                }
            }
            if let Err(e) = self.exec("SAVEPOINT job") {
                failed = Some(e.to_string());
                break;
            }
            let ok = job.run(self);
            let end = if ok {
                self.exec("RELEASE job")
            } else {
                self.exec("ROLLBACK TO job")
                    .and_then(|()| self.exec("RELEASE job"))
            };
            if let Err(e) = end {
                failed = Some(e.to_string());
            }
        }
        if failed.is_none() {
            let due = self.write_rollups_now
                || self.rollups().dirty_len() >= rollups::MAX_DIRTY
                || self.last_write.elapsed() >= WRITE_ROLLUPS_EVERY;
            if due {
                if let Err(e) = self.write_dirty() {
                    failed = Some(e.to_string());
                }
            }
        }
        self.write_rollups_now = false;
        let outcome = match failed {
            Some(m) => Err(m),
            None => self.exec("COMMIT").map_err(|e| e.to_string()),
        };
        match &outcome {
            Ok(()) => {}
            Err(_) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                for k in std::mem::take(&mut self.group_added) {
                    self.dedup.remove(k);
                }
                for k in std::mem::take(&mut self.group_credit_keys) {
                    self.credit_keys.remove(&k);
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{day_of, Dedup, DedupWindow, KeyTable, DAY_MS};

    /// The table agrees with a `HashSet` over inserts and removes, with keys crowded onto few home
    /// slots (long runs, wrap-around at the end of the array, backward shifts) and through growth.
    #[test]
    fn key_table_behaves_as_a_set() {
        let mut t = KeyTable::new();
        let mut model = HashSet::new();
        let mut inserted = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..30_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Homes crowded near both ends of the array (runs that wrap around), distinct high
            // bits; sometimes 0 or 1.
            let low = if x & 1 == 0 {
                x % 512
            } else {
                u64::MAX - x % 512
            };
            let key = match x % 97 {
                0 => 0,
                1 => 1,
                _ => (u128::from(x >> 8) << 64) | u128::from(low),
            };
            let stored = key.max(1);
            if x.is_multiple_of(3) && !inserted.is_empty() {
                // Mostly keys that are present, sometimes one that is not.
                let k = if x.is_multiple_of(5) {
                    key
                } else {
                    inserted.swap_remove((x >> 3) as usize % inserted.len())
                };
                t.remove(k);
                model.remove(&k.max(1));
            } else {
                inserted.push(key);
                assert_eq!(t.insert(key, 0), model.insert(stored), "step {step}");
            }
            assert_eq!(t.len, model.len());
        }
        for k in &model {
            assert!(!t.insert(*k, 0), "{k} lost");
        }
        assert_eq!(t.slots.iter().filter(|k| **k != 0).count(), model.len());
    }

    #[test]
    fn dedup_keys_pairs_exactly() {
        let mut d = Dedup::new(DedupWindow::default());
        let k = d.key("c1", "e1");
        assert!(d.insert(k, 0));
        assert!(!d.insert(k, 0));
        assert_ne!(
            d.key("c1", "e1x"),
            d.key("c1e", "1x"),
            "pairs are prefix-free"
        );
        assert_ne!(k, d.key("c2", "e1"));
        d.remove(k);
        assert!(d.insert(k, 0));
        let n = 10_000;
        let fresh = (0..n)
            .filter(|i| d.insert(d.key("c", &i.to_string()), 0))
            .count();
        assert_eq!(fresh, n);
    }

    /// Pruning forgets exactly the keys of the days that left the window (the others stay
    /// found), once a day, and shrinks the tables.
    #[test]
    fn prune_forgets_only_days_out_of_the_window() {
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let clock = crate::clock::Clock::frozen(start);
        let mut d = Dedup::new(DedupWindow {
            window: chrono::Duration::days(35),
            clock: clock.clone(),
            max_keys: usize::MAX,
            ..DedupWindow::default()
        });
        let first = day_of(start.timestamp_millis() - 35 * DAY_MS);
        let n = 5_000u32;
        // Days first .. first + 4, n keys each.
        for day in 0..5u16 {
            for i in 0..n {
                assert!(d.insert(d.key("c", &format!("{day}-{i}")), first + day));
            }
        }
        assert_eq!(d.len(), 5 * n as usize);
        let before: usize = d.shards.iter().map(|s| s.slots.len()).sum();
        d.prune();
        assert!(d.sweep.is_none());
        assert_eq!(d.len(), 5 * n as usize, "nothing left the window yet");
        clock.advance(chrono::Duration::days(2));
        // Spread over 8 calls (after 8 groups), the keys inside the window kept all along.
        for call in 1..=8 {
            d.prune();
            assert_eq!(d.sweep.is_none(), call == 8, "call {call}");
        }
        assert_eq!(d.len(), 3 * n as usize);
        for day in 0..5u16 {
            let found = (0..n)
                .filter(|i| !d.insert(d.key("c", &format!("{day}-{i}")), first + day))
                .count();
            assert_eq!(found, if day < 2 { 0 } else { n as usize }, "day {day}");
        }
        // The days put back above go again at the next day's prune.
        clock.advance(chrono::Duration::days(1));
        for _ in 0..8 {
            d.prune();
        }
        assert_eq!(d.len(), 2 * n as usize);
        let after: usize = d.shards.iter().map(|s| s.slots.len()).sum();
        assert!(
            after < before,
            "{after} slots after pruning, {before} before"
        );
    }

    /// At the memory bound a key not held is reported new without being held, and the next
    /// prune drops the oldest day held even inside the window (never today's keys).
    #[test]
    fn the_bound_holds_the_newest_keys() {
        let start = chrono::DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let clock = crate::clock::Clock::frozen(start);
        let mut d = Dedup::new(DedupWindow {
            window: chrono::Duration::days(35),
            clock,
            max_keys: 10_000,
            ..DedupWindow::default()
        });
        let first = day_of(start.timestamp_millis() - 35 * DAY_MS);
        for day in 0..3u16 {
            for i in 0..5_000 {
                assert!(d.insert(d.key("c", &format!("{day}-{i}")), first + day));
            }
        }
        assert_eq!(d.len(), 10_000, "day 2 reported new, not held");
        assert!(!d.insert(d.key("c", "0-7"), first), "a held key is found");
        for _ in 0..8 {
            d.prune();
        }
        assert_eq!(d.len(), 5_000, "the oldest day went early");
        assert!(d.insert(d.key("c", "0-7"), first + 3), "day 0 forgotten");
        assert!(!d.insert(d.key("c", "1-7"), first + 1), "day 1 kept");
    }
}
