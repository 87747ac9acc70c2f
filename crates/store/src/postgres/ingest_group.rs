//! Group commit of ingest: concurrent requests' batches are merged into one statement (one
//! transaction), so the database writes the events and, above all, the rollups of many requests at
//! once instead of 32 transactions queueing on each other's rollup rows.
//!
//! A request queues its batch and waits; up to [`WRITERS`] writer tasks take everything queued (up
//! to [`MAX_ROWS`] events) and run it as one statement. Each request keeps its own outcome: the
//! statement answers which request every inserted row came from, and when a merged statement fails
//! (an unknown customer, a usage total out of range, a lost connection) every batch of that group
//! is run again alone, so only the batch at fault fails, whole. A request is answered only after
//! the commit of the statement that carried its batch.

use std::sync::{Arc, Mutex, MutexGuard};

use deadpool_postgres::Pool;
use tokio::sync::oneshot;

use super::events::{ingest_together, outcome, Batch};
use crate::{IngestOutcome, NewEvent, Result, StoreError};

/// Statements in flight at once per process: one keeps the groups large (their rollup upserts,
/// one per customer and period touched, are then shared by more events), a second keeps the
/// database busy while the first one's answer travels back. Two measured best end to end so far
/// (see the README's PostgreSQL figures); several processes still write at once.
const WRITERS: usize = 2;
/// Events per merged statement at most (a larger single batch runs alone).
const MAX_ROWS: usize = 10_000;

struct Job {
    batch: Batch,
    reply: oneshot::Sender<Result<IngestOutcome>>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    writers: usize,
}

/// The per-process ingest queue of a PostgreSQL store.
pub(crate) struct IngestGroups {
    pool: Pool,
    queue: Mutex<Queue>,
}

/// Gives a writer's slot back if its task ends early (a panic); a writer that finds the queue
/// empty gives it back itself, under the same lock, so no job is queued without a writer.
struct Slot {
    groups: Arc<IngestGroups>,
    held: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.held {
            let mut q = self.groups.lock();
            q.writers = q.writers.saturating_sub(1);
        }
    }
}

impl IngestGroups {
    pub(crate) fn new(pool: Pool) -> Arc<IngestGroups> {
        Arc::new(IngestGroups {
            pool,
            queue: Mutex::new(Queue::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could break half-way.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ingests one request's batch, merged with whatever other requests are waiting.
    pub(crate) async fn ingest(self: &Arc<Self>, events: Vec<NewEvent>) -> Result<IngestOutcome> {
        if events.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let (reply, answer) = oneshot::channel();
        let start_writer = {
            let mut q = self.lock();
            q.jobs.push(Job {
                batch: Batch::new(events),
                reply,
            });
            let free = q.writers < WRITERS;
            if free {
                q.writers += 1;
            }
            free
        };
        if start_writer {
            // A task of its own: a request that goes away (client disconnect) must not take the
            // other requests' statement with it.
            tokio::spawn(Arc::clone(self).write());
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs groups until the queue is empty.
    async fn write(self: Arc<Self>) {
        let mut slot = Slot {
            groups: Arc::clone(&self),
            held: true,
        };
        loop {
            let group = {
                let mut q = self.lock();
                let mut rows = 0;
                let take = q
                    .jobs
                    .iter()
                    .take_while(|j| {
                        rows += j.batch.events.len();
                        rows <= MAX_ROWS
                    })
                    .count()
                    .max(1)
                    .min(q.jobs.len());
                if take == 0 {
                    q.writers = q.writers.saturating_sub(1);
                    slot.held = false;
                    return;
                }
                q.jobs.drain(..take).collect::<Vec<Job>>()
            };
            self.run(group).await;
        }
    }

    async fn run(&self, group: Vec<Job>) {
        let batches: Vec<&Batch> = group.iter().map(|j| &j.batch).collect();
        match ingest_together(&self.pool, &batches).await {
            Ok(accepted) => {
                for (job, n) in group.into_iter().zip(accepted) {
                    let result = outcome(&job.batch, n);
                    let _ = job.reply.send(Ok(result));
                }
            }
            Err(e) if group.len() == 1 => {
                if let Some(job) = group.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
            Err(_) => {
                for job in group {
                    let alone = ingest_together(&self.pool, &[&job.batch]).await;
                    let result =
                        alone.map(|a| outcome(&job.batch, a.first().copied().unwrap_or(0)));
                    let _ = job.reply.send(result);
                }
            }
        }
    }
}
