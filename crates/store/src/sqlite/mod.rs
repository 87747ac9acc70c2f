//! The embedded SQLite backend: one database file in WAL mode.
//!
//! **One writer.** A dedicated thread owns the only write connection. Every write is a job sent to
//! it; the thread drains all queued jobs, runs each inside its own savepoint of one transaction
//! (so a failing job changes nothing and does not affect the others), commits once, and only then
//! answers every waiter. Concurrent requests therefore share one fsync (group commit).
//!
//! **Durability.** `journal_mode=WAL`. With the default `synchronous=NORMAL` a commit has written its
//! WAL frames to the operating system before the writer answers, so an acknowledged write survives a
//! crash or `kill -9` of the Tally process; only an operating-system crash or power loss can lose the
//! last commits (SQLite fsyncs the WAL at checkpoints). With `sqlite://PATH?synchronous=full` every
//! commit also fsyncs the WAL, so acknowledged writes survive power loss too, at the price of one
//! fsync per group commit (about 4 ms on the benchmark machine): group commit keeps the throughput,
//! but every request waits for that fsync.
//!
//! **Dedup without a random index.** `(customer, event id)` must be unique forever, but a B-tree
//! index keyed by random ids costs about one random page write per event. Instead the writer keeps
//! an in-memory set of 128-bit keyed hashes of every stored `(customer, event id)`, rebuilt from the
//! append-only `events` table when the store opens. Because the writer thread is the only writer
//! of the file, that set is authoritative: an event is new exactly when its hash is absent, and it
//! is added in the same job that inserts the row (removed again if the job or the commit fails).
//! With 128 bits the chance that two different events collide is about n²/2¹²⁹ (≈10⁻²⁵ for 10⁸
//! events). Cost: 20–40 bytes of memory per stored event (open-addressing tables of the hashes
//! themselves, see `writer`) and a scan of `events` at start.
//!
//! **One ingesting process.** That set is only authoritative if no other process appends events,
//! so a store that may ingest holds an exclusive lock on `<file>-ingest.lock` for its lifetime
//! (released by the OS if the process dies). Operator commands that do not ingest open the file with
//! [`SqliteStore::open_admin`]: no lock, no dedup set, and [`Store::ingest`] refused.
//!
//! **Rollups about once a second.** Each ingest job appends its events and adds what they add to
//! each rollup row to the writer's in-memory rows; the changed rows are written to `usage_rollups`
//! about once a second (and before a job that reads that table, such as a period close, when a
//! group counted distinct values, and at shutdown), with a watermark: the last event they include.
//! The events table is the log: when the store opens, the usage of every event after the watermark
//! is added again, so a crash loses nothing (see `rollups`).
//!
//! **Readers** use their own connections from a small pool, on the blocking thread pool.
//! Usage rollups read by a store that holds the ingest lock are also kept in memory (see
//! `usage_cache`): the writer invalidates what each group changed after its commit and before
//! answering it, and readers lay the committed rows it has not written yet over what they read,
//! so entitlement checks usually need no database read and still see every acknowledged event. Another process (an
//! operator command) adds the events after the rollups' watermark to what it reads.
//!
//! **Checkpoints off the write path.** Automatic WAL checkpoints would run inside the writer's
//! commits and stall every waiting request for the duration of a database-file fsync; instead a
//! separate thread runs passive checkpoints (which do not block the writer) twice a second.

mod api_keys;
mod audit;
mod credits;
mod customers;
mod events;
mod history;
mod invoices;
mod leases;
mod migrate;
mod notify;
mod pages;
mod rollups;
mod stripe;
mod stripe_invoices;
mod stripe_links;
mod topups;
mod usage_push;
pub(crate) use stripe_links::redemption_entry;
mod usage_cache;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::{
    ApiKey, Backend, Customer, CustomerUpsert, IngestOutcome, InvoiceBuilder, NewApiKey, NewEvent,
    Result, Store, StoreError, StoredInvoice, Subscription, SubscriptionUpsert, UsageRollup,
};
use crate::{
    AuditContext, AuditEntry, AuditFilter, AuditPage, CreditAccount, CreditOutcome, CreditRequest,
    FlagOverride, NewPageSession, PageSession, PageSessionCheck, UsageNotification,
};
use crate::{
    ClaimedDelivery, DeliveryAttempt, InboxEvent, InboxFilter, InboxOutcome, NewInboxEvent,
    NewNotification, NewTransaction, NewWebhookEndpoint, Notification, NotificationFilter,
    StripeSubscriptionUpsert, Transaction, WebhookDelivery, WebhookEndpoint,
};
pub use migrate::SCHEMA_VERSION;
use usage_cache::{Lookup, UsageCache};
pub use writer::DedupWindow;
use writer::{FnJob, Writer};

const MAX_IDLE_READERS: usize = 8;

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Box<dyn writer::WriteJob>>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<(std_mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Page cache of each reader connection, KiB.
    reader_cache_kib: u32,
    /// The ingest lock, held while this store may ingest.
    ingest_lock: Mutex<Option<std::fs::File>>,
    /// Rollups in memory; only while this process holds the ingest lock (see `usage_cache`).
    usage_cache: Option<Arc<UsageCache>>,
    /// The writer's dedup hash, so that callers hash their events before queueing them.
    hasher: Arc<writer::KeyHasher>,
    /// The writer's rollup rows, for the committed usage it has not written yet.
    rollups: Arc<std::sync::RwLock<rollups::Rollups>>,
}

/// Takes the exclusive ingest lock of the database at `path`.
fn lock_for_ingest(path: &Path) -> Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push("-ingest.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Database(format!("cannot open {lock_path:?}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StoreError::Invalid(format!(
                "{} is in use by another Tally process that ingests events (tally serve?): stop it, \
                 or send the events through its API",
                path.display()
            )));
        }
    }
    Ok(file)
}

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs passive WAL checkpoints until `stop` is dropped, then a final truncating one.
fn checkpoint_loop(path: PathBuf, stop: std_mpsc::Receiver<()>) {
    let conn = match Connection::open(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the checkpoint connection");
            return;
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            _ => {
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                return;
            }
        }
    }
}

/// When a commit is acknowledged (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Durable against process crashes (`kill -9`); the default.
    #[default]
    Normal,
    /// Also durable against power loss: an fsync per commit.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

fn open_writer(path: &Path, sync: Synchronous, cache_kib: u32) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The rollups and recent event pages stay hot within a bounded page cache (negative: KiB).
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib))?;
    // Checkpoints run on their own thread (see the module documentation).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Heavy ingest can outrun checkpoints and grow the WAL; shrink it back once it is reset.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    // Every statement the writer runs stays prepared: rusqlite keeps 16 by default, fewer than a
    // credit change with its notification uses, and re-preparing them cost more than the writes.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection (`prepare_cached`).
const STATEMENT_CACHE: usize = 256;

fn open_reader(path: &Path, cache_kib: u32) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "cache_size", -i64::from(cache_kib))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl SqliteStore {
    /// Opens or creates the database file, applies pending migrations, rebuilds the dedup set and
    /// starts the writer thread.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        Self::open_with(path, Synchronous::default()).await
    }

    /// Like [`SqliteStore::open`] with an explicit durability level.
    pub async fn open_with(path: impl AsRef<Path>, sync: Synchronous) -> Result<SqliteStore> {
        Self::open_windowed(path, sync, DedupWindow::default()).await
    }

    /// Like [`SqliteStore::open_with`] with the deduplication window of the events that will be
    /// accepted: only the keys of stored events inside it are kept in memory (see
    /// [`DedupWindow`]).
    pub async fn open_windowed(
        path: impl AsRef<Path>,
        sync: Synchronous,
        window: DedupWindow,
    ) -> Result<SqliteStore> {
        Self::open_inner(path.as_ref(), sync, true, window).await
    }

    /// Opens the file for everything but event ingestion (operator commands next to a running
    /// server): no ingest lock, no dedup set.
    pub async fn open_admin(path: impl AsRef<Path>, sync: Synchronous) -> Result<SqliteStore> {
        Self::open_inner(path.as_ref(), sync, false, DedupWindow::default()).await
    }

    async fn open_inner(
        path: &Path,
        sync: Synchronous,
        ingest: bool,
        window: DedupWindow,
    ) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let p = path.clone();
        let reader_cache_kib = window.reader_cache_kib;
        let (writer, ingest_lock) =
            tokio::task::spawn_blocking(move || -> Result<(Writer, Option<std::fs::File>)> {
                let lock = if ingest {
                    Some(lock_for_ingest(&p)?)
                } else {
                    None
                };
                let mut conn = open_writer(&p, sync, window.writer_cache_kib)?;
                migrate::run(&mut conn)?;
                let mut writer = Writer::new(conn, ingest, window)?;
                if ingest {
                    writer.usage_cache = Some(Arc::new(UsageCache::default()));
                }
                Ok((writer, lock))
            })
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        let usage_cache = writer.usage_cache.clone();
        let hasher = writer.dedup.hasher.clone();
        let rollups = writer.rollups.clone();
        let (tx, rx) = mpsc::channel(4096);
        let thread = std::thread::Builder::new()
            .name("tally-sqlite-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        let (stop, stopped) = std_mpsc::channel();
        let p = path.clone();
        let checkpointer = std::thread::Builder::new()
            .name("tally-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(p, stopped))
            .map_err(|e| {
                StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(thread)),
            checkpointer: Mutex::new(Some((stop, checkpointer))),
            ingest_lock: Mutex::new(ingest_lock),
            readers: Arc::new(Mutex::new(Vec::new())),
            reader_cache_kib,
            usage_cache,
            hasher,
            rollups,
        })
    }

    /// Runs `f` on the writer thread inside the next group transaction; answers after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// Queues a job for the writer; `reads_rollups`: the job reads `usage_rollups`, which the
    /// writer then brings up to date first (it otherwise writes them about once a second).
    async fn submit<T, F>(&self, f: F, touches_rollups: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        let sender = self
            .writer
            .lock()
            .map_err(|_| StoreError::Closed)?
            .clone()
            .ok_or(StoreError::Closed)?;
        let (tx, rx) = oneshot::channel();
        sender
            .send(Box::new(FnJob::new(f, tx, touches_rollups)))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let cache_kib = self.reader_cache_kib;
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut r| r.pop());
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&path, cache_kib)?,
            };
            let out = f(&conn);
            if let Ok(mut r) = readers.lock() {
                if r.len() < MAX_IDLE_READERS {
                    r.push(conn);
                }
            }
            out
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> Result<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    async fn close(&self) {
        // Dropping the last sender lets the writer finish the queued jobs and exit.
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        let thread = self.writer_thread.lock().ok().and_then(|mut t| t.take());
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut c| c.take());
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(t) = thread {
                let _ = t.join();
            }
            if let Some((stop, t)) = checkpointer {
                drop(stop);
                let _ = t.join();
            }
        })
        .await;
        if let Ok(mut l) = self.ingest_lock.lock() {
            l.take();
        }
    }

    async fn upsert_customer_audited(
        &self,
        c: CustomerUpsert,
        audit: Option<AuditContext>,
    ) -> Result<(Customer, bool)> {
        self.write(move |w| customers::upsert(&w.conn, &c, audit))
            .await
    }

    async fn get_customer(&self, id: &str) -> Result<Option<Customer>> {
        let id = id.to_owned();
        self.read(move |c| customers::get(c, &id)).await
    }

    async fn list_customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Customer>> {
        let after = after.map(str::to_owned);
        self.read(move |c| customers::list_after(c, after.as_deref(), limit))
            .await
    }

    async fn customer_anchors(&self, ids: &[String]) -> Result<Vec<crate::CustomerAnchors>> {
        let ids = ids.to_vec();
        self.read(move |c| customers::anchors(c, &ids)).await
    }

    async fn set_allowance_anchor(&self, customer_id: &str, anchor: DateTime<Utc>) -> Result<bool> {
        let id = customer_id.to_owned();
        self.write(move |w| customers::set_allowance_anchor(&w.conn, &id, anchor))
            .await
    }

    async fn anchor_version(&self) -> Result<i64> {
        self.read(customers::anchor_version).await
    }

    async fn put_subscription_audited(
        &self,
        s: SubscriptionUpsert,
        audit: Option<AuditContext>,
    ) -> Result<Subscription> {
        self.write(move |w| customers::put_subscription(&w.conn, &s, audit))
            .await
    }

    async fn get_subscription(&self, customer_id: &str) -> Result<Option<Subscription>> {
        let id = customer_id.to_owned();
        self.read(move |c| customers::get_subscription(c, &id))
            .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.read(customers::list_subscriptions).await
    }

    async fn ingest(&self, events: Vec<NewEvent>) -> Result<IngestOutcome> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let batch = events::prepare(&self.hasher, events)?;
        // The batch comes back to be freed here, off the writer thread.
        let (outcome, batch) = self
            .submit(move |w| events::ingest(w, batch), false)
            .await?;
        drop(batch);
        Ok(outcome)
    }

    async fn usage(&self, customer_id: &str, billed: DateTime<Utc>) -> Result<Vec<UsageRollup>> {
        let Some(cache) = &self.usage_cache else {
            let id = customer_id.to_owned();
            return self
                .read(move |c| events::usage_with_tail(c, &id, billed))
                .await;
        };
        let ms = billed.timestamp_millis();
        let generation = match cache.get(customer_id, ms) {
            Lookup::Hit(rows) => return Ok(rows.as_ref().clone()),
            Lookup::Miss(generation) => generation,
        };
        // The writer's rows first, then the table (see `usage_cache`).
        let unwritten = self
            .rollups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .unwritten(customer_id, ms);
        let id = customer_id.to_owned();
        let stored = self.read(move |c| events::usage(c, &id, billed)).await?;
        let rows = usage_cache::merge(stored, unwritten);
        cache.insert(
            customer_id.to_owned(),
            ms,
            generation,
            Arc::new(rows.clone()),
        );
        Ok(rows)
    }

    async fn event_ids(&self, customer_id: &str) -> Result<Vec<String>> {
        let id = customer_id.to_owned();
        self.read(move |c| events::event_ids(c, &id)).await
    }

    async fn event_count(&self) -> Result<u64> {
        self.read(events::count).await
    }

    async fn close_period(
        &self,
        customer_id: &str,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
        build: InvoiceBuilder,
    ) -> Result<Option<StoredInvoice>> {
        let id = customer_id.to_owned();
        self.submit(
            move |w| {
                let closed = invoices::close_period(&w.conn, &id, period_start, period_end, build);
                // The close moves billed_through: read it again at the next ingest.
                w.billed_through.remove(&id);
                closed
            },
            true,
        )
        .await
    }

    async fn list_invoices(&self, customer_id: &str) -> Result<Vec<StoredInvoice>> {
        let id = customer_id.to_owned();
        self.read(move |c| invoices::list(c, &id)).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.write(move |w| leases::acquire(&w.conn, &name, &holder, now, until))
            .await
    }

    async fn clock_offset(&self) -> Result<Option<i64>> {
        self.read(leases::clock_offset).await
    }

    async fn set_clock_offset(&self, offset_ms: i64, now: DateTime<Utc>) -> Result<()> {
        self.write(move |w| leases::set_clock_offset(&w.conn, offset_ms, now))
            .await
    }

    async fn create_api_key_audited(
        &self,
        key: NewApiKey,
        audit: Option<AuditContext>,
    ) -> Result<ApiKey> {
        self.write(move |w| api_keys::create(&w.conn, &key, audit))
            .await
    }

    async fn find_api_key(&self, secret_hash: &str) -> Result<Option<ApiKey>> {
        let h = secret_hash.to_owned();
        self.read(move |c| api_keys::find(c, &h)).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        self.read(api_keys::list).await
    }

    async fn revoke_api_key_audited(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |w| api_keys::revoke(&w.conn, &id, at, audit))
            .await
    }

    async fn credit_apply(&self, req: CreditRequest) -> Result<CreditOutcome> {
        // Credit jobs never read rollups; a usage event they record adds to the group's deltas.
        self.submit(move |w| credits::apply(w, req), false).await
    }

    async fn credit_account(
        &self,
        customer_id: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<CreditAccount> {
        let id = customer_id.to_owned();
        self.read(move |c| credits::account(c, &id, limit, before_seq))
            .await
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<()> {
        self.write(move |w| audit::insert(&w.conn, &entry)).await
    }

    async fn audit_log(&self, filter: AuditFilter) -> Result<AuditPage> {
        self.read(move |c| audit::list(c, &filter)).await
    }

    async fn notifications(&self, customer_id: &str) -> Result<Vec<UsageNotification>> {
        let id = customer_id.to_owned();
        self.read(move |c| notify::usage(c, &id)).await
    }

    async fn enqueue_notification(&self, n: NewNotification) -> Result<bool> {
        self.write(move |w| notify::enqueue(&w.conn, &n)).await
    }

    async fn list_notifications(&self, filter: NotificationFilter) -> Result<Vec<Notification>> {
        self.read(move |c| notify::list(c, &filter)).await
    }

    async fn create_webhook_endpoint_audited(
        &self,
        e: NewWebhookEndpoint,
        audit: Option<AuditContext>,
    ) -> Result<WebhookEndpoint> {
        self.write(move |w| notify::create_endpoint(&w.conn, &e, audit))
            .await
    }

    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>> {
        self.read(notify::list_endpoints).await
    }

    async fn get_webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>> {
        let id = id.to_owned();
        self.read(move |c| notify::get_endpoint(c, &id)).await
    }

    async fn delete_webhook_endpoint_audited(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |w| notify::delete_endpoint(&w.conn, &id, at, audit))
            .await
    }

    async fn rotate_webhook_endpoint_secret_audited(
        &self,
        id: &str,
        new_secret: &str,
        previous_until: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<Option<WebhookEndpoint>> {
        let (id, secret) = (id.to_owned(), new_secret.to_owned());
        self.write(move |w| notify::rotate(&w.conn, &id, &secret, previous_until, audit))
            .await
    }

    async fn set_email_channel(
        &self,
        events: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.write(move |w| notify::set_email_channel(&w.conn, events.as_deref(), now))
            .await
    }

    async fn disable_webhook_endpoint(
        &self,
        id: &str,
        at: DateTime<Utc>,
        notice: NewNotification,
    ) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |w| notify::disable(&w.conn, &id, at, &notice))
            .await
    }

    async fn claim_deliveries(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let holder = holder.to_owned();
        let exclusive = self.ingest_lock.lock().is_ok_and(|l| l.is_some());
        self.write(move |w| notify::claim(&w.conn, &holder, now, until, limit, exclusive))
            .await
    }

    async fn finish_delivery(
        &self,
        attempt: DeliveryAttempt,
    ) -> Result<Option<Option<DateTime<Utc>>>> {
        self.write(move |w| notify::finish(&w.conn, &attempt)).await
    }

    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>> {
        let id = endpoint_id.to_owned();
        self.read(move |c| notify::deliveries(c, &id, limit)).await
    }

    async fn replay_notification(&self, id: &str, now: DateTime<Utc>) -> Result<Option<u64>> {
        let id = id.to_owned();
        self.write(move |w| notify::replay(&w.conn, &id, now)).await
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(notify::oldest_pending).await
    }

    async fn put_flag_override_audited(
        &self,
        o: FlagOverride,
        audit: Option<AuditContext>,
    ) -> Result<()> {
        self.write(move |w| credits::put_flag_override(&w.conn, &o, audit))
            .await
    }

    async fn delete_flag_override_audited(
        &self,
        customer_id: &str,
        flag: &str,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        let (id, flag) = (customer_id.to_owned(), flag.to_owned());
        self.write(move |w| credits::delete_flag_override(&w.conn, &id, &flag, audit))
            .await
    }

    async fn flag_overrides(&self, customer_id: &str) -> Result<Vec<FlagOverride>> {
        let id = customer_id.to_owned();
        self.read(move |c| credits::flag_overrides(c, &id)).await
    }

    async fn inbox_insert(&self, event: NewInboxEvent) -> Result<bool> {
        self.write(move |w| stripe::insert(&w.conn, &event)).await
    }

    async fn inbox_claim(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>> {
        let holder = holder.to_owned();
        self.write(move |w| stripe::claim(&w.conn, &holder, now, until, limit))
            .await
    }

    async fn inbox_finish(
        &self,
        event_id: &str,
        holder: &str,
        outcome: InboxOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (id, holder) = (event_id.to_owned(), holder.to_owned());
        self.write(move |w| stripe::finish(&w.conn, &id, &holder, &outcome, now))
            .await
    }

    async fn inbox_oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| {
            let at: Option<i64> = c
                .prepare_cached(
                    "SELECT MIN(received_at) FROM stripe_events WHERE status = 'pending'",
                )?
                .query_row([], |r| r.get(0))?;
            Ok(at.map(crate::time::from_ms))
        })
        .await
    }

    async fn inbox_list(&self, filter: InboxFilter) -> Result<Vec<InboxEvent>> {
        self.read(move |c| stripe::list(c, &filter)).await
    }

    async fn inbox_get(&self, event_id: &str) -> Result<Option<InboxEvent>> {
        let id = event_id.to_owned();
        self.read(move |c| stripe::get(c, &id)).await
    }

    async fn inbox_replay(
        &self,
        event_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let id = event_id.map(str::to_owned);
        self.write(move |w| stripe::replay(&w.conn, id.as_deref(), since, now))
            .await
    }

    async fn put_stripe_subscription(&self, sub: StripeSubscriptionUpsert) -> Result<Subscription> {
        self.write(move |w| stripe::put_subscription(&w.conn, &sub))
            .await
    }

    async fn record_transaction(&self, t: NewTransaction) -> Result<bool> {
        self.write(move |w| stripe::record_transaction(&w.conn, &t))
            .await
    }

    async fn transactions(
        &self,
        customer_id: &str,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Vec<Transaction>> {
        let (id, after) = (customer_id.to_owned(), starting_after.map(str::to_owned));
        self.read(move |c| stripe::transactions(c, &id, limit, after.as_deref()))
            .await
    }

    async fn subscription_history(
        &self,
        customer_id: Option<&str>,
    ) -> Result<Vec<crate::SubscriptionChangeRecord>> {
        let id = customer_id.map(str::to_owned);
        self.read(move |c| history::list(c, id.as_deref())).await
    }

    async fn transactions_before(&self, before: DateTime<Utc>) -> Result<Vec<Transaction>> {
        self.read(move |c| history::transactions_before(c, before))
            .await
    }

    async fn invoices_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<crate::StoredInvoice>> {
        self.read(move |c| history::invoices_between(c, from, to))
            .await
    }

    async fn create_page_session(
        &self,
        s: NewPageSession,
        audit: Option<AuditContext>,
    ) -> Result<PageSession> {
        self.write(move |w| pages::create(&w.conn, &s, audit)).await
    }

    async fn redeem_page_code(
        &self,
        code_hash: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PageSession>> {
        let (c, t) = (code_hash.to_owned(), token_hash.to_owned());
        self.write(move |w| pages::redeem(&w.conn, &c, &t, now))
            .await
    }

    async fn touch_page_session(
        &self,
        token_hash: &str,
        check: PageSessionCheck,
    ) -> Result<Option<PageSession>> {
        let t = token_hash.to_owned();
        self.write(move |w| pages::touch(&w.conn, &t, check)).await
    }

    async fn get_page_session(&self, id: &str) -> Result<Option<PageSession>> {
        let id = id.to_owned();
        self.read(move |c| pages::get(c, &id)).await
    }

    async fn revoke_page_session(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |w| pages::revoke(&w.conn, &id, at, audit))
            .await
    }

    async fn claim_stripe_customer(
        &self,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::StripeCustomerLink> {
        let id = customer_id.to_owned();
        self.write(move |w| stripe_links::claim(&w.conn, &id, now))
            .await
    }

    async fn stripe_customer(
        &self,
        customer_id: &str,
    ) -> Result<Option<crate::StripeCustomerLink>> {
        let id = customer_id.to_owned();
        self.read(move |c| stripe_links::link(c, &id)).await
    }

    async fn set_stripe_customer(
        &self,
        customer_id: &str,
        stripe_id: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::StripeCustomerLink> {
        let (id, sid) = (customer_id.to_owned(), stripe_id.to_owned());
        self.write(move |w| stripe_links::set(&w.conn, &id, &sid, now))
            .await
    }

    async fn insert_checkout(&self, row: crate::CheckoutRecord) -> Result<()> {
        self.write(move |w| stripe_links::insert_checkout(&w.conn, &row))
            .await
    }

    async fn finish_checkout(
        &self,
        id: &str,
        outcome: crate::CallOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.to_owned();
        self.write(move |w| stripe_links::finish_checkout(&w.conn, &id, &outcome, now))
            .await
    }

    async fn checkout(&self, id: &str) -> Result<Option<crate::CheckoutRecord>> {
        let id = id.to_owned();
        self.read(move |c| stripe_links::checkout(c, &id)).await
    }

    async fn redeem_coupon(
        &self,
        r: crate::CouponRedemption,
        audit: Option<AuditContext>,
    ) -> Result<crate::RedeemOutcome> {
        self.write(move |w| stripe_links::redeem_coupon(&w.conn, &r, audit))
            .await
    }

    async fn insert_plan_change(&self, row: crate::PlanChangeRecord) -> Result<()> {
        self.write(move |w| stripe_links::insert_plan_change(&w.conn, &row))
            .await
    }

    async fn finish_plan_change(
        &self,
        id: &str,
        outcome: crate::CallOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let id = id.to_owned();
        self.write(move |w| stripe_links::finish_plan_change(&w.conn, &id, &outcome, now))
            .await
    }

    async fn invoices_to_push(&self, limit: usize) -> Result<Vec<StoredInvoice>> {
        self.read(move |c| usage_push::to_push(c, limit)).await
    }

    async fn invoices_starting_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredInvoice>> {
        self.read(move |c| usage_push::starting_between(c, from, to))
            .await
    }

    async fn insert_push(&self, push: crate::InvoicePush) -> Result<crate::InvoicePush> {
        self.write(move |w| {
            usage_push::insert(&w.conn, &push)?
                .ok_or_else(|| StoreError::Database("invoice push vanished".into()))
        })
        .await
    }

    async fn get_push(&self, invoice_id: &str) -> Result<Option<crate::InvoicePush>> {
        let id = invoice_id.to_owned();
        self.read(move |c| usage_push::get(c, &id)).await
    }

    async fn put_stripe_invoice(&self, invoice: crate::StripeInvoiceRecord) -> Result<bool> {
        self.write(move |w| stripe_invoices::put(&w.conn, &invoice))
            .await
    }

    async fn stripe_invoices_of_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<crate::StripeInvoiceRecord>> {
        let id = customer_id.to_owned();
        self.read(move |c| stripe_invoices::of_customer(c, &id))
            .await
    }

    async fn stripe_invoices_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<crate::StripeInvoiceRecord>> {
        self.read(move |c| stripe_invoices::before(c, before)).await
    }

    async fn pushes_of_customer(&self, customer_id: &str) -> Result<Vec<crate::InvoicePush>> {
        let id = customer_id.to_owned();
        self.read(move |c| usage_push::of_customer(c, &id)).await
    }

    async fn pushes_of_stripe_invoice(
        &self,
        stripe_invoice: &str,
    ) -> Result<Vec<crate::InvoicePush>> {
        let id = stripe_invoice.to_owned();
        self.read(move |c| usage_push::of_stripe_invoice(c, &id))
            .await
    }

    async fn due_pushes(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>> {
        self.read(move |c| usage_push::due(c, now, limit)).await
    }

    async fn claim_push(
        &self,
        invoice_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<crate::InvoicePush>> {
        let (id, holder) = (invoice_id.to_owned(), holder.to_owned());
        self.write(move |w| usage_push::claim(&w.conn, &id, &holder, now, until))
            .await
    }

    async fn set_push_invoice(
        &self,
        invoice_id: &str,
        target: crate::PushTarget,
        stripe_invoice: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::InvoicePush>> {
        let (id, si) = (invoice_id.to_owned(), stripe_invoice.to_owned());
        self.write(move |w| usage_push::set_invoice(&w.conn, &id, target, &si, now))
            .await
    }

    async fn finish_push(
        &self,
        invoice_id: &str,
        holder: &str,
        outcome: crate::PushOutcome,
    ) -> Result<bool> {
        let (id, holder) = (invoice_id.to_owned(), holder.to_owned());
        self.write(move |w| usage_push::finish(&w.conn, &id, &holder, &outcome))
            .await
    }

    async fn set_push_hosted_url(&self, stripe_invoice: &str, url: &str) -> Result<u64> {
        let (si, u) = (stripe_invoice.to_owned(), url.to_owned());
        self.write(move |w| usage_push::set_hosted_url(&w.conn, &si, &u))
            .await
    }

    async fn set_push_state_of_stripe_invoice(
        &self,
        stripe_invoice: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let (si, st) = (stripe_invoice.to_owned(), state.to_owned());
        self.write(move |w| usage_push::set_state_of_stripe_invoice(&w.conn, &si, &st, now))
            .await
    }

    async fn insert_refund(&self, r: crate::RefundRecord) -> Result<(crate::RefundRecord, bool)> {
        self.write(move |w| usage_push::insert_refund(&w.conn, &r))
            .await
    }

    async fn update_refund(&self, r: &crate::RefundRecord) -> Result<()> {
        let r = r.clone();
        self.write(move |w| usage_push::update_refund(&w.conn, &r))
            .await
    }

    async fn refunds_of_payment_intent(
        &self,
        payment_intent: &str,
    ) -> Result<Vec<crate::RefundRecord>> {
        let pi = payment_intent.to_owned();
        self.read(move |c| usage_push::refunds_of(c, &pi)).await
    }

    async fn stripe_customer_links(&self) -> Result<Vec<crate::StripeCustomerLink>> {
        self.read(stripe_links::all_links).await
    }

    async fn put_auto_topup(&self, settings: crate::AutoTopup) -> Result<crate::AutoTopup> {
        self.write(move |w| topups::put_settings(&w.conn, &settings))
            .await
    }

    async fn get_auto_topup(&self, customer_id: &str) -> Result<Option<crate::AutoTopup>> {
        let c = customer_id.to_owned();
        self.read(move |conn| topups::get_settings(conn, &c)).await
    }

    async fn delete_auto_topup(&self, customer_id: &str) -> Result<bool> {
        let c = customer_id.to_owned();
        self.write(move |w| topups::delete_settings(&w.conn, &c))
            .await
    }

    async fn request_topup(&self, t: crate::NewTopup) -> Result<crate::TopupRequest> {
        self.write(move |w| topups::request(&w.conn, &t)).await
    }

    async fn claim_topups(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<crate::TopupRecord>> {
        self.write(move |w| topups::claim(&w.conn, now, until, limit))
            .await
    }

    async fn get_topup(&self, id: &str) -> Result<Option<crate::TopupRecord>> {
        let id = id.to_owned();
        self.read(move |c| topups::get(c, &id)).await
    }

    async fn topups_of_customer(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<crate::TopupRecord>> {
        let c = customer_id.to_owned();
        self.read(move |conn| topups::of_customer(conn, &c, limit))
            .await
    }

    async fn retry_topup(&self, r: crate::TopupRetry) -> Result<()> {
        self.write(move |w| topups::retry(&w.conn, &r)).await
    }

    async fn finish_topup(&self, f: crate::TopupFinish) -> Result<bool> {
        self.write(move |w| topups::finish(&w.conn, &f)).await
    }

    async fn reset_topup_failures(&self, customer_id: &str, now: DateTime<Utc>) -> Result<bool> {
        let c = customer_id.to_owned();
        self.write(move |w| topups::reset(&w.conn, &c, now)).await
    }

    async fn topup_retries_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>> {
        self.read(move |c| topups::retries_due(c, now, limit)).await
    }

    async fn clear_topup_retry(&self, customer_id: &str) -> Result<()> {
        let c = customer_id.to_owned();
        self.write(move |w| topups::clear_retry(&w.conn, &c)).await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.lock() {
            w.take();
        }
        if let Some(t) = self.writer_thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
        if let Some((stop, t)) = self.checkpointer.lock().ok().and_then(|mut c| c.take()) {
            drop(stop);
            let _ = t.join();
        }
    }
}
