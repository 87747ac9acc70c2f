//! Prepaid-credit ledger records, usage-threshold notifications and feature-flag overrides; plus
//! the backend-independent step that turns a credit request into the rows to write (the ledger's
//! rules themselves live in `tally_core::credits`).
//!
//! Credits are exact decimals (`NUMERIC` on PostgreSQL, decimal `TEXT` on SQLite). Each entry that
//! adds credits opens a *bucket* whose `remaining` is decremented by consumption; the balance is
//! the sum of open (non-empty, unexpired) buckets, so it can never go below zero.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use tally_core::credits::{allocate, CreditBucket, CreditError, EntryKind};

use crate::{AuditContext, AuditEntry, NewEvent, Result, StoreError};

/// One stored ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditEntryRecord {
    pub id: String,
    pub customer_id: String,
    /// Position in the customer's ledger (ascending with time).
    pub seq: i64,
    /// grant, purchase, consume, adjust, refund or expire.
    pub kind: String,
    /// Signed change to the balance.
    pub amount: Decimal,
    /// The balance right after this entry.
    pub balance_after: Decimal,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
    /// The API key that made the entry (`env_…` for `TALLY_API_KEY`, `system` for plan grants).
    pub actor: Option<String>,
    pub metric: Option<String>,
    pub quantity: Option<Decimal>,
    pub event_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Credits left from one entry that added them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditBucketRecord {
    /// The id of the entry that opened the bucket.
    pub entry_id: String,
    pub kind: String,
    /// Credits the entry added.
    pub amount: Decimal,
    /// Credits left.
    pub remaining: Decimal,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl CreditBucketRecord {
    fn to_core(&self) -> CreditBucket {
        CreditBucket {
            id: self.entry_id.clone(),
            remaining: self.remaining,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }

    /// Whether the bucket's credits can be used at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.to_core().is_open(now)
    }
}

/// A customer's credits: the open buckets and one page of the ledger (newest first).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CreditAccount {
    /// Buckets with credits left (expired ones included until an `expire` entry writes them off).
    pub buckets: Vec<CreditBucketRecord>,
    pub entries: Vec<CreditEntryRecord>,
    /// Whether older entries exist beyond this page.
    pub has_more: bool,
}

impl CreditAccount {
    /// Credits usable at `now`.
    pub fn balance(&self, now: DateTime<Utc>) -> Decimal {
        self.buckets
            .iter()
            .filter(|b| b.is_open(now))
            .map(|b| b.remaining)
            .sum()
    }
}

/// A change to a customer's credits.
#[derive(Debug, Clone)]
pub struct CreditRequest {
    /// Id for the entry to write.
    pub entry_id: String,
    pub customer_id: String,
    pub kind: EntryKind,
    /// Signed amount: positive adds credits, negative removes them.
    pub amount: Decimal,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    /// Retry key, unique per customer: the same key returns the first entry.
    pub idempotency_key: Option<String>,
    /// A canonical form of the request; the same key with another fingerprint is a conflict.
    pub fingerprint: String,
    pub actor: Option<String>,
    /// Whether to write an audit log record (admin grants and adjustments).
    pub audit: bool,
    /// Consumption by metric: the usage event recorded in the same transaction.
    pub event: Option<NewEvent>,
    pub quantity: Option<Decimal>,
    pub now: DateTime<Utc>,
    /// Whether to enqueue the notifications of this change (`credits.granted`, `credits.low`,
    /// `credits.depleted`) in its transaction, and below which balance credits are low.
    pub notify: Option<CreditNotify>,
}

/// What a credit change notifies (see [`CreditRequest::notify`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreditNotify {
    /// `credits.low` is sent when the balance falls from at least this to below it.
    pub low_balance: Option<Decimal>,
}

/// What a credit request did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreditOutcome {
    /// The entry was written.
    Applied(CreditEntryRecord),
    /// The idempotency key was used before with the same request: its entry, nothing written.
    Replayed(CreditEntryRecord),
    /// The idempotency key was used before with a different request.
    IdempotencyConflict,
    /// The balance does not cover the debit; nothing written.
    Insufficient { balance: Decimal, required: Decimal },
}

/// A usage-threshold notification, queued in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageNotification {
    pub id: String,
    pub customer_id: String,
    pub metric: String,
    pub period_start: DateTime<Utc>,
    /// Percent of the limit crossed (e.g. 80, 95, 100).
    pub threshold: u32,
    pub used: Decimal,
    pub limit: Decimal,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A per-customer feature-flag override.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagOverride {
    pub customer_id: String,
    pub flag: String,
    pub enabled: bool,
    pub updated_at: DateTime<Utc>,
}

/// The rows a credit request writes, decided from the customer's buckets at `now`.
pub(crate) struct CreditPlan {
    /// Expired buckets with credits left, written off first: (bucket id, credits).
    pub expirations: Vec<(String, Decimal)>,
    /// New `remaining` of buckets the request draws from.
    pub draws: Vec<(String, Decimal)>,
    /// Whether the request opens a bucket of its own.
    pub opens_bucket: bool,
    /// Balance after the expirations (before the request).
    pub balance_before: Decimal,
    /// Balance after the request.
    pub balance_after: Decimal,
}

/// The audit row of an admin grant or adjustment (`req.audit`).
pub(crate) fn audit_entry(req: &CreditRequest, p: &CreditPlan) -> Option<AuditEntry> {
    if !req.audit {
        return None;
    }
    Some(AuditEntry {
        action: format!("credits.{}", req.kind.as_str()),
        target_type: "credit_entry".into(),
        target_id: req.entry_id.clone(),
        customer_id: Some(req.customer_id.clone()),
        before: Some(serde_json::json!({
            "balance": p.balance_before.normalize().to_string(),
        })),
        after: Some(serde_json::json!({
            "kind": req.kind.as_str(),
            "amount": req.amount.normalize().to_string(),
            "reason": req.reason,
            "expires_at": req.expires_at,
            "balance": p.balance_after.normalize().to_string(),
        })),
        context: AuditContext {
            actor: req.actor.clone().unwrap_or_default(),
            idempotency_key: req.idempotency_key.clone(),
            at: req.now,
        },
    })
}

/// The notifications a credit change causes: `credits.granted` for a grant, `credits.depleted`
/// when the balance falls from above zero to zero or below, otherwise `credits.low` when it falls
/// below the low-balance threshold. Keyed by the entry, so a replay enqueues nothing.
pub(crate) fn notifications(req: &CreditRequest, p: &CreditPlan) -> Vec<crate::NewNotification> {
    let Some(cfg) = &req.notify else {
        return Vec::new();
    };
    let note = |kind: &str| crate::NewNotification {
        kind: kind.to_owned(),
        customer_id: Some(req.customer_id.clone()),
        payload: serde_json::json!({
            "customer": req.customer_id,
            "entry": req.entry_id,
            "kind": req.kind.as_str(),
            "amount": req.amount.normalize().to_string(),
            "balance": p.balance_after.normalize().to_string(),
            "low_balance": cfg.low_balance.map(|l| l.normalize().to_string()),
        }),
        dedup_key: format!("{kind}:{}:{}", req.customer_id, req.entry_id),
        created_at: req.now,
    };
    let mut out = Vec::new();
    if req.kind == EntryKind::Grant && req.amount > Decimal::ZERO {
        out.push(note("credits.granted"));
    }
    if p.balance_before > Decimal::ZERO && p.balance_after <= Decimal::ZERO {
        out.push(note("credits.depleted"));
    } else if let Some(low) = cfg.low_balance {
        if p.balance_before >= low && p.balance_after < low {
            out.push(note("credits.low"));
        }
    }
    out
}

/// Applies the ledger rules: expired credits are written off, a positive amount opens a bucket,
/// a negative amount draws from open buckets (expiring first) or fails as insufficient.
pub(crate) fn plan(
    buckets: &[CreditBucketRecord],
    req: &CreditRequest,
) -> Result<std::result::Result<CreditPlan, CreditOutcome>> {
    let now = req.now;
    let mut core: Vec<CreditBucket> = Vec::with_capacity(buckets.len());
    let mut expirations = Vec::new();
    for b in buckets {
        let mut c = b.to_core();
        if c.remaining > Decimal::ZERO && c.expires_at.is_some_and(|e| e <= now) {
            expirations.push((c.id.clone(), c.remaining));
            c.remaining = Decimal::ZERO;
        }
        core.push(c);
    }
    let balance_before = tally_core::credits::balance(&core, now);
    if req.amount.is_zero() {
        return Err(StoreError::Invalid("the amount must not be zero".into()));
    }
    if req.amount > Decimal::ZERO {
        return Ok(Ok(CreditPlan {
            expirations,
            draws: Vec::new(),
            opens_bucket: true,
            balance_before,
            balance_after: balance_before + req.amount,
        }));
    }
    match allocate(&core, -req.amount, now) {
        Ok(allocs) => {
            let draws = allocs
                .into_iter()
                .filter_map(|a| {
                    core.iter()
                        .find(|b| b.id == a.bucket)
                        .map(|b| (a.bucket.clone(), b.remaining - a.amount))
                })
                .collect();
            Ok(Ok(CreditPlan {
                expirations,
                draws,
                opens_bucket: false,
                balance_before,
                balance_after: balance_before + req.amount,
            }))
        }
        Err(CreditError::InsufficientCredits { balance, required }) => {
            Ok(Err(CreditOutcome::Insufficient { balance, required }))
        }
        Err(CreditError::InvalidEntry(m)) => Err(StoreError::Invalid(m)),
    }
}

/// Id of the `expire` entry written off a bucket by a later request.
pub(crate) fn expire_entry_id(bucket: &str) -> String {
    format!("{bucket}_expired")
}
