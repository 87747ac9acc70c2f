//! Tally's persistence layer: one [`Store`] interface with two implementations, SQLite (the embedded
//! default, one `tally.db` file in WAL mode) and PostgreSQL (several Tally processes sharing one
//! database). SQL lives only here, per backend, with migrations beside each backend.
//!
//! Ingestion is designed so that a batch costs sequential writes: raw events are appended in ingestion
//! order, per-period rollups are updated in the same transaction (aggregates never scan raw events),
//! and dedup of `(customer, event id)` does not cost a random page write per event (see
//! [`sqlite`] for the in-memory dedup set and [`postgres`] for the unique constraint).

pub mod audit;
pub mod clock;
pub mod credits;
mod error;
pub mod history;
pub mod model;
pub mod notify;
pub mod pages;
pub mod postgres;
mod rollup;
pub mod sqlite;
pub mod stripe;
pub mod stripe_invoices;
pub mod stripe_links;
pub mod testing;
mod time;
pub mod topups;
pub mod usage_push;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use audit::{AuditContext, AuditEntry, AuditFilter, AuditPage, AuditRecord, AuditTarget};
pub use credits::{
    CreditAccount, CreditBucketRecord, CreditEntryRecord, CreditNotify, CreditOutcome,
    CreditRequest, FlagOverride, UsageNotification,
};
pub use error::StoreError;
pub use history::SubscriptionChangeRecord;
pub use model::*;
pub use notify::{
    ClaimedDelivery, DeliveryAttempt, NewNotification, NewWebhookEndpoint, Notification,
    NotificationFilter, WebhookDelivery, WebhookEndpoint,
};
pub use pages::{NewPageSession, PageSession, PageSessionCheck};
pub use stripe::{
    InboxEvent, InboxFilter, InboxOutcome, NewInboxEvent, NewTransaction, StripeSubscriptionUpsert,
    Transaction,
};
pub use stripe_invoices::StripeInvoiceRecord;
pub use stripe_links::{
    CallOutcome, CheckoutRecord, CouponRedemption, PlanChangeRecord, RedeemOutcome,
    StripeCustomerLink,
};
pub use topups::{AutoTopup, NewTopup, TopupFinish, TopupRecord, TopupRequest, TopupRetry};
pub use usage_push::{InvoicePush, PushOutcome, PushTarget, RefundRecord};

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which backend a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Builds the invoice of a closing period from that period's usage, inside the store's transaction
/// (so no event can slip into the period between reading its usage and writing its invoice).
pub type InvoiceBuilder =
    Box<dyn FnOnce(&[UsageRollup]) -> std::result::Result<NewInvoice, String> + Send + 'static>;

/// Tally's persistence interface. Every method is retry-safe: creates are upserts or guarded by
/// unique constraints.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Cheap round trip to the database (for `/health`).
    async fn ping(&self) -> Result<()>;

    /// Waits until every queued write is committed and stops background work.
    async fn close(&self);

    // --- customers -------------------------------------------------------------------------

    /// Creates or updates a customer, unaudited (seeding and tests). Returns the customer and
    /// whether it was created.
    async fn upsert_customer(&self, customer: CustomerUpsert) -> Result<(Customer, bool)> {
        self.upsert_customer_audited(customer, None).await
    }

    /// Creates or updates a customer; with `audit`, records the change (`customer.created` or
    /// `customer.updated`, unless nothing changed) in the same transaction.
    async fn upsert_customer_audited(
        &self,
        customer: CustomerUpsert,
        audit: Option<AuditContext>,
    ) -> Result<(Customer, bool)>;

    async fn get_customer(&self, id: &str) -> Result<Option<Customer>>;

    /// At most `limit` customers in id order, starting after the id `after` (from the first
    /// customer when `None`): keyset pagination, so a walk over every customer holds one page at a
    /// time, and customers created during the walk never make another one appear twice or be
    /// skipped. Ids are compared as the database orders them (bytewise on SQLite, the database's
    /// collation on PostgreSQL).
    async fn list_customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Customer>>;

    /// The customers among `ids` that exist, with their creation and allowance anchor (for event
    /// validation).
    async fn customer_anchors(&self, ids: &[String]) -> Result<Vec<CustomerAnchors>>;

    /// Makes `anchor` the customer's allowance anchor from that instant on (a mirrored Stripe
    /// subscription's billing cycle anchor): the anchor in force becomes the previous one, and the
    /// anchor version moves on. Returns whether it changed (an unknown customer changes nothing).
    async fn set_allowance_anchor(&self, customer_id: &str, anchor: DateTime<Utc>) -> Result<bool>;

    /// A number that every allowance anchor change increases: processes sharing the database
    /// drop their cached anchors when it moves.
    async fn anchor_version(&self) -> Result<i64>;

    // --- subscriptions ---------------------------------------------------------------------

    /// Sets the customer's (single, current) subscription, unaudited (Stripe sync and tests).
    async fn put_subscription(&self, sub: SubscriptionUpsert) -> Result<Subscription> {
        self.put_subscription_audited(sub, None).await
    }

    /// Sets the customer's subscription; with `audit`, records the change
    /// (`subscription.created` or `subscription.updated`, unless nothing changed) in the same
    /// transaction.
    async fn put_subscription_audited(
        &self,
        sub: SubscriptionUpsert,
        audit: Option<AuditContext>,
    ) -> Result<Subscription>;

    async fn get_subscription(&self, customer_id: &str) -> Result<Option<Subscription>>;

    /// Every subscription, for the period closer.
    async fn list_subscriptions(&self) -> Result<Vec<Subscription>>;

    // --- events and usage ------------------------------------------------------------------

    /// Stores a validated batch atomically: events whose `(customer, event id)` was seen before
    /// (ever, or earlier in this batch) are counted as duplicates and change nothing. Returns once
    /// the batch is durable.
    async fn ingest(&self, events: Vec<NewEvent>) -> Result<IngestOutcome>;

    /// Usage rollups billed in the period starting at `billed_period_start` (on-time usage of that
    /// period plus late usage of earlier, already invoiced periods).
    async fn usage(
        &self,
        customer_id: &str,
        billed_period_start: DateTime<Utc>,
    ) -> Result<Vec<UsageRollup>>;

    /// The event ids stored for a customer, in ingestion order (operators and tests; scans).
    async fn event_ids(&self, customer_id: &str) -> Result<Vec<String>>;

    /// Number of stored events.
    async fn event_count(&self) -> Result<u64>;

    // --- invoices --------------------------------------------------------------------------

    /// Writes the invoice of `[period_start, period_end)` for a customer exactly once. Returns
    /// `None` when that period already has an invoice. Later events of the period become labelled
    /// adjustments of the next period.
    async fn close_period(
        &self,
        customer_id: &str,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
        build: InvoiceBuilder,
    ) -> Result<Option<StoredInvoice>>;

    /// Closed invoices of a customer, newest first.
    async fn list_invoices(&self, customer_id: &str) -> Result<Vec<StoredInvoice>>;

    // --- leases ----------------------------------------------------------------------------

    /// Takes or renews the lease `name` for `holder` until `until`, if it is free, expired at
    /// `now`, or already held by `holder`. Returns whether `holder` holds it now. Used so that one of
    /// several processes sharing a database runs the period closer.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    // --- the clock's offset ---------------------------------------------------------------

    /// How far (milliseconds) Tally's clock was moved ahead of the system clock by
    /// `tally clock advance`; `None` when it never was.
    async fn clock_offset(&self) -> Result<Option<i64>>;

    /// Records the clock's offset (milliseconds ahead of the system clock).
    async fn set_clock_offset(&self, offset_ms: i64, now: DateTime<Utc>) -> Result<()>;

    // --- shared rate limits ------------------------------------------------------------------

    /// Whether request rate limits are counted in this database, shared by every process using
    /// it ([`Store::rate_admit`]). SQLite serves one process, which counts them in memory.
    fn shares_rate_limits(&self) -> bool {
        false
    }

    /// Admits one request of the rate-limited `key` (GCRA: one request per `interval`, a burst up
    /// to `burst` ahead), counted in the database so that all processes together admit exactly
    /// the configured rate. Returns `None` when admitted, or how long until a request would be.
    /// Only for stores that [`Store::shares_rate_limits`].
    async fn rate_admit(
        &self,
        key: &str,
        interval: std::time::Duration,
        burst: std::time::Duration,
    ) -> Result<Option<std::time::Duration>> {
        let _ = (key, interval, burst);
        Err(StoreError::Invalid(
            "this store counts no rate limits: they are kept in memory".into(),
        ))
    }

    // --- API keys --------------------------------------------------------------------------

    async fn create_api_key(&self, key: NewApiKey) -> Result<ApiKey> {
        self.create_api_key_audited(key, None).await
    }

    /// Creates a key; with `audit`, records `api_key.created` in the same transaction.
    async fn create_api_key_audited(
        &self,
        key: NewApiKey,
        audit: Option<AuditContext>,
    ) -> Result<ApiKey>;

    /// The active key whose secret hashes to `secret_hash`.
    async fn find_api_key(&self, secret_hash: &str) -> Result<Option<ApiKey>>;

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;

    /// Revokes a key; returns whether an active key was revoked.
    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        self.revoke_api_key_audited(id, at, None).await
    }

    /// Revokes a key; with `audit`, records `api_key.revoked` in the same transaction when an
    /// active key was revoked.
    async fn revoke_api_key_audited(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool>;

    // --- credits, notifications, flag overrides (see [`credits`]) -------------------------

    /// Applies a credit request atomically: idempotency check, write-off of expired credits,
    /// check-and-debit (or a new bucket), the entry, the audit record and, for consumption by
    /// metric, the usage event — all in one transaction, serialized per customer.
    async fn credit_apply(&self, req: CreditRequest) -> Result<CreditOutcome>;

    /// The customer's open buckets and a page of its ledger, newest first, starting below
    /// `before_seq` when given.
    async fn credit_account(
        &self,
        customer_id: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<CreditAccount>;

    // --- audit log (see [`audit`]) --------------------------------------------------------

    /// Writes one audit row on its own, for actions whose change is not in this database (e.g. a
    /// call to Stripe). Changes stored here are audited by their own method, in their transaction.
    async fn record_audit(&self, entry: AuditEntry) -> Result<()>;

    /// A page of audit rows matching `filter`, newest first.
    async fn audit_log(&self, filter: AuditFilter) -> Result<AuditPage>;

    /// Queues a threshold notification (`usage.threshold_reached` in the outbox) unless one
    /// exists for the same customer, metric, period and threshold. Returns whether it was queued.
    async fn record_notification(&self, n: UsageNotification) -> Result<bool> {
        self.enqueue_notification(NewNotification {
            kind: "usage.threshold_reached".into(),
            customer_id: Some(n.customer_id.clone()),
            payload: notify::usage_payload(&n),
            dedup_key: notify::usage_dedup_key(&n),
            created_at: n.created_at,
        })
        .await
    }

    /// Queued usage-threshold notifications of a customer, oldest first.
    async fn notifications(&self, customer_id: &str) -> Result<Vec<UsageNotification>>;

    // --- notification outbox and webhooks (see [`notify`]) ---------------------------------

    /// Enqueues a notification on its own (for moments whose change is not in this database, or
    /// is already committed), fanned out to the subscribed endpoints in the same transaction.
    /// Returns false when its dedup key was enqueued before (nothing written).
    async fn enqueue_notification(&self, n: NewNotification) -> Result<bool>;

    /// Notifications matching `filter`, oldest first.
    async fn list_notifications(&self, filter: NotificationFilter) -> Result<Vec<Notification>>;

    /// Creates an endpoint; with `audit`, records `webhook_endpoint.created`.
    async fn create_webhook_endpoint_audited(
        &self,
        e: NewWebhookEndpoint,
        audit: Option<AuditContext>,
    ) -> Result<WebhookEndpoint>;

    /// The endpoints not deleted, oldest first.
    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>>;

    /// An endpoint not deleted.
    async fn get_webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>>;

    /// Deletes an endpoint (its deliveries stop); with `audit`, records
    /// `webhook_endpoint.deleted`. Returns whether it existed.
    async fn delete_webhook_endpoint_audited(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool>;

    /// Replaces an endpoint's secret; the previous one keeps signing until `previous_until`.
    /// With `audit`, records `webhook_endpoint.rotated` (secrets never enter the log).
    async fn rotate_webhook_endpoint_secret_audited(
        &self,
        id: &str,
        new_secret: &str,
        previous_until: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<Option<WebhookEndpoint>>;

    /// Opens the email channel ([`notify::EMAIL_CHANNEL`]) for `events` (its earlier pending
    /// deliveries resume), or with `None` closes it (nothing more fans out to it). Returns
    /// whether anything changed.
    async fn set_email_channel(
        &self,
        events: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Disables an endpoint that failed for too long and enqueues `notice` (its
    /// `webhook_endpoint.disabled` notification) in the same transaction. Returns whether it was
    /// enabled.
    async fn disable_webhook_endpoint(
        &self,
        id: &str,
        at: DateTime<Utc>,
        notice: NewNotification,
    ) -> Result<bool>;

    /// Leases up to `limit` due deliveries to `holder` until `until`: pending, due at `now`, not
    /// leased by a live worker, of an enabled endpoint, and the oldest pending one of their
    /// (endpoint, customer).
    async fn claim_deliveries(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>>;

    /// Records an attempt of a delivery `holder` claimed; returns the endpoint's `failing_since`
    /// after it (`None` after a success), or `None` when the lease was lost (nothing written).
    async fn finish_delivery(
        &self,
        attempt: DeliveryAttempt,
    ) -> Result<Option<Option<DateTime<Utc>>>>;

    /// An endpoint's deliveries, newest first.
    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>>;

    /// Delivers a notification again: its deliveries become pending and due at `now` (and
    /// endpoints now subscribed to its type get one). Returns how many deliveries are pending, or
    /// `None` when no notification has that id.
    async fn replay_notification(&self, id: &str, now: DateTime<Utc>) -> Result<Option<u64>>;

    /// When the oldest pending delivery of an enabled endpoint was enqueued (outbox lag).
    async fn oldest_pending_delivery(&self) -> Result<Option<DateTime<Utc>>>;

    /// Sets a customer's override of a flag, unaudited.
    async fn put_flag_override(&self, o: FlagOverride) -> Result<()> {
        self.put_flag_override_audited(o, None).await
    }

    /// Sets a customer's override of a flag; with `audit`, records `flag_override.created` or
    /// `flag_override.updated` (unless nothing changed) in the same transaction.
    async fn put_flag_override_audited(
        &self,
        o: FlagOverride,
        audit: Option<AuditContext>,
    ) -> Result<()>;

    /// Removes a customer's override of a flag, unaudited; returns whether one existed.
    async fn delete_flag_override(&self, customer_id: &str, flag: &str) -> Result<bool> {
        self.delete_flag_override_audited(customer_id, flag, None)
            .await
    }

    /// Removes a customer's override of a flag; with `audit`, records `flag_override.deleted`
    /// in the same transaction when one existed.
    async fn delete_flag_override_audited(
        &self,
        customer_id: &str,
        flag: &str,
        audit: Option<AuditContext>,
    ) -> Result<bool>;

    /// The customer's flag overrides.
    async fn flag_overrides(&self, customer_id: &str) -> Result<Vec<FlagOverride>>;

    // --- Stripe → Tally (see [`stripe`]) ---------------------------------------------------

    /// Stores a verified Stripe event in the inbox, pending, in one transaction; returns whether
    /// it was new (a repeated delivery of an event id stores nothing).
    async fn inbox_insert(&self, event: NewInboxEvent) -> Result<bool>;

    /// Claims up to `limit` pending events due at `now` for `holder` until `until`, oldest first,
    /// never an event while an earlier unfinished event of the same Stripe object exists, and
    /// never one another holder's unexpired claim covers (several processes may claim at once).
    async fn inbox_claim(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>>;

    /// Records how processing an event claimed by `holder` ended and releases the claim.
    async fn inbox_finish(
        &self,
        event_id: &str,
        holder: &str,
        outcome: InboxOutcome,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Inbox events, newest received first.
    async fn inbox_list(&self, filter: InboxFilter) -> Result<Vec<InboxEvent>>;

    /// When the oldest event still pending (received, not yet applied, ignored or parked) was
    /// received.
    async fn inbox_oldest_pending(&self) -> Result<Option<DateTime<Utc>>>;

    /// One inbox event.
    async fn inbox_get(&self, event_id: &str) -> Result<Option<InboxEvent>>;

    /// Makes events pending again (one by id, or every one received since an instant), to be
    /// processed anew; returns how many. Processing is idempotent, so nothing is applied twice.
    async fn inbox_replay(
        &self,
        event_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Mirrors a Stripe subscription onto the customer's subscription (source `stripe`).
    async fn put_stripe_subscription(&self, sub: StripeSubscriptionUpsert) -> Result<Subscription>;

    /// Records a transaction unless one with its key exists; returns whether it was new.
    async fn record_transaction(&self, t: NewTransaction) -> Result<bool>;

    /// A customer's transactions, newest first, at most `limit`, after the transaction
    /// `starting_after` (its id) when given.
    async fn transactions(
        &self,
        customer_id: &str,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Vec<Transaction>>;
    // --- business facts (see [`history`]) ---------------------------------------------------

    /// The subscription history of one customer (or of every customer with `None`), in the
    /// order the changes took effect.
    async fn subscription_history(
        &self,
        customer_id: Option<&str>,
    ) -> Result<Vec<SubscriptionChangeRecord>>;

    /// Every customer's transactions that happened before `before`, oldest first.
    async fn transactions_before(&self, before: DateTime<Utc>) -> Result<Vec<Transaction>>;

    /// Every customer's invoices written in `[from, to)`, oldest first.
    async fn invoices_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredInvoice>>;

    // --- page sessions (see [`pages`]) ---------------------------------------------------

    /// Stores a page session whose link is not used yet; with `audit`, records
    /// `page_session.created` in the same transaction.
    async fn create_page_session(
        &self,
        s: NewPageSession,
        audit: Option<AuditContext>,
    ) -> Result<PageSession>;

    /// Uses a link: the session whose code hashes to `code_hash`, if its link is unused, unexpired
    /// at `now` and not revoked, becomes the session of `token_hash` (atomically, so a link works
    /// once even when used twice at the same time).
    async fn redeem_page_code(
        &self,
        code_hash: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PageSession>>;

    /// The live session of `token_hash` (started, not revoked, within `check`'s limits), its last
    /// use moved to `check.now`.
    async fn touch_page_session(
        &self,
        token_hash: &str,
        check: PageSessionCheck,
    ) -> Result<Option<PageSession>>;

    async fn get_page_session(&self, id: &str) -> Result<Option<PageSession>>;

    /// Revokes a session (used or not); returns whether a live one was revoked. With `audit`,
    /// records `page_session.revoked` in the same transaction.
    async fn revoke_page_session(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool>;

    // --- links to Stripe (see [`stripe_links`]) ---------------------------------------------

    /// The customer's Stripe link, creating the row (without a Stripe id) if there is none.
    async fn claim_stripe_customer(
        &self,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<StripeCustomerLink>;

    /// The customer's Stripe link, if any.
    async fn stripe_customer(&self, customer_id: &str) -> Result<Option<StripeCustomerLink>>;

    /// Records the Stripe id of a claimed link unless one is recorded already (the first wins)
    /// and sets its `updated_at` (when Stripe last received the customer's details); returns
    /// the link as stored.
    async fn set_stripe_customer(
        &self,
        customer_id: &str,
        stripe_id: &str,
        now: DateTime<Utc>,
    ) -> Result<StripeCustomerLink>;

    /// Inserts a new checkout row (before Stripe is called).
    async fn insert_checkout(&self, row: CheckoutRecord) -> Result<()>;

    /// Records the outcome of a checkout row's Stripe call.
    async fn finish_checkout(
        &self,
        id: &str,
        outcome: CallOutcome,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// A checkout row.
    async fn checkout(&self, id: &str) -> Result<Option<CheckoutRecord>>;

    /// Inserts a new plan-change row (before Stripe is called).
    async fn insert_plan_change(&self, row: PlanChangeRecord) -> Result<()>;

    /// Redeems a coupon for a customer, exactly within `max_redemptions` across all customers
    /// and processes; with `audit`, records `coupon.redeemed` in the same transaction.
    async fn redeem_coupon(
        &self,
        r: CouponRedemption,
        audit: Option<AuditContext>,
    ) -> Result<RedeemOutcome>;

    /// Records the outcome of a plan change's Stripe call (`Created`: applied).
    async fn finish_plan_change(
        &self,
        id: &str,
        outcome: CallOutcome,
        now: DateTime<Utc>,
    ) -> Result<()>;

    // --- the Stripe invoice mirror (see [`stripe_invoices`]) ----------------------------------

    /// Inserts or updates a mirrored Stripe invoice unless the stored row comes from a newer
    /// event (`event_created`); returns whether the row changed.
    async fn put_stripe_invoice(&self, invoice: StripeInvoiceRecord) -> Result<bool>;

    /// A customer's mirrored Stripe invoices, newest first.
    async fn stripe_invoices_of_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<StripeInvoiceRecord>>;

    /// Every mirrored Stripe invoice created before `before`, oldest first.
    async fn stripe_invoices_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<StripeInvoiceRecord>>;

    // --- usage pushes to Stripe (see [`usage_push`]) -----------------------------------------

    /// Closed invoices of customers whose subscription comes from Stripe that have no push row
    /// yet, oldest period first, at most `limit`.
    async fn invoices_to_push(&self, limit: usize) -> Result<Vec<StoredInvoice>>;

    /// Closed invoices of every customer whose period starts in `[from, to)`, by customer.
    async fn invoices_starting_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredInvoice>>;

    /// Inserts a push row unless the invoice has one; returns the row as stored.
    async fn insert_push(&self, push: InvoicePush) -> Result<InvoicePush>;

    async fn get_push(&self, invoice_id: &str) -> Result<Option<InvoicePush>>;

    /// A customer's push rows, newest period first.
    async fn pushes_of_customer(&self, customer_id: &str) -> Result<Vec<InvoicePush>>;

    /// The pushes whose lines are on `stripe_invoice` (its renewal or standalone invoice).
    async fn pushes_of_stripe_invoice(&self, stripe_invoice: &str) -> Result<Vec<InvoicePush>>;

    /// Pending pushes due at `now`, oldest period first, at most `limit`.
    async fn due_pushes(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>>;

    /// Claims a push for `holder` until `until` unless another holder's claim is live; returns
    /// the row when claimed.
    async fn claim_push(
        &self,
        invoice_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<InvoicePush>>;

    /// Records a push's Stripe invoice unless one is recorded already (the first wins); returns
    /// the row as stored.
    async fn set_push_invoice(
        &self,
        invoice_id: &str,
        target: PushTarget,
        stripe_invoice: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<InvoicePush>>;

    /// Records how a claimed attempt ended and releases the claim (nothing when `holder` no
    /// longer holds it). Returns whether it was recorded.
    async fn finish_push(
        &self,
        invoice_id: &str,
        holder: &str,
        outcome: PushOutcome,
    ) -> Result<bool>;

    /// Keeps Stripe's hosted page of `stripe_invoice` with the pushes whose lines are on it.
    /// Returns how many changed.
    async fn set_push_hosted_url(&self, stripe_invoice: &str, url: &str) -> Result<u64>;

    /// Moves the pushes whose lines are on `stripe_invoice` to `state` (from Stripe's events),
    /// except pending ones (their push is not finished) and paid ones (payment is final).
    /// Returns how many moved.
    async fn set_push_state_of_stripe_invoice(
        &self,
        stripe_invoice: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<u64>;

    /// Inserts a refund row unless one with its `dedup_key` exists; returns the row as stored
    /// and whether it was new.
    async fn insert_refund(&self, r: RefundRecord) -> Result<(RefundRecord, bool)>;

    /// Replaces a refund row's outcome fields (state, Stripe id, request id, error, credits).
    async fn update_refund(&self, r: &RefundRecord) -> Result<()>;

    /// The refunds of a payment intent, oldest first.
    async fn refunds_of_payment_intent(&self, payment_intent: &str) -> Result<Vec<RefundRecord>>;

    /// Every Tally customer's Stripe customer (links with a Stripe id), for reconciliation.
    async fn stripe_customer_links(&self) -> Result<Vec<StripeCustomerLink>>;

    // --- automatic top-ups (see [`topups`]) ----------------------------------------------------

    /// Creates or replaces a customer's top-up settings; a change of settings keeps the decline
    /// state (only a card change or a success resets it). Returns the settings as stored.
    async fn put_auto_topup(&self, settings: AutoTopup) -> Result<AutoTopup>;

    /// A customer's top-up settings.
    async fn get_auto_topup(&self, customer_id: &str) -> Result<Option<AutoTopup>>;

    /// Removes a customer's top-up settings (a top-up in flight finishes); whether they existed.
    async fn delete_auto_topup(&self, customer_id: &str) -> Result<bool>;

    /// Writes a top-up row when the rules of [`topups`] allow it, atomically across processes.
    async fn request_topup(&self, t: NewTopup) -> Result<TopupRequest>;

    /// Claims pending top-ups due at `now` (at most `limit`) until `until`; another process
    /// claims them only after that.
    async fn claim_topups(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<TopupRecord>>;

    /// A top-up row.
    async fn get_topup(&self, id: &str) -> Result<Option<TopupRecord>>;

    /// A customer's top-ups, newest first, at most `limit`.
    async fn topups_of_customer(&self, customer_id: &str, limit: usize)
        -> Result<Vec<TopupRecord>>;

    /// Leaves a pending top-up for a later attempt (Stripe did not answer about the charge).
    async fn retry_topup(&self, r: TopupRetry) -> Result<()>;

    /// Ends a pending top-up and, in the same transaction, updates the customer's decline state
    /// (a success resets it; a decline counts, backs off and may open the breaker) and enqueues
    /// the notification. Nothing when the row is no longer pending; returns whether it ended it.
    async fn finish_topup(&self, f: TopupFinish) -> Result<bool>;

    /// The card changed: closes the breaker and ends the backoff. Returns whether anything was
    /// reset.
    async fn reset_topup_failures(&self, customer_id: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Customers whose backoff after a decline is over (breaker closed, nothing in flight).
    async fn topup_retries_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>>;

    /// Ends a customer's backoff without a top-up (its balance is back above the threshold).
    async fn clear_topup_retry(&self, customer_id: &str) -> Result<()>;
}

/// Opens (and migrates) the store named by a database URL: `sqlite://PATH` (optionally
/// `?synchronous=full`, see [`sqlite`]) or `postgres://…` / `postgresql://…`. In-memory SQLite is not
/// supported: the writer and the readers share one file.
/// A customer's id, creation instant and allowance anchor.
pub type CustomerAnchors = (String, DateTime<Utc>, tally_core::period::AllowanceAnchor);

pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    open(url, true, sqlite::DedupWindow::default()).await
}

/// The deduplication window by default, and its minimum: Stripe keeps meter events 35 days.
pub const DEFAULT_DEDUP_WINDOW: chrono::Duration = chrono::Duration::days(35);

/// Keys of the deduplication window a SQLite store holds in memory at most, by default (about
/// 11–23 MB): the newest. Older ids are answered by the unique index on disk.
pub const DEFAULT_DEDUP_MEMORY_KEYS: usize = 500_000;

/// SQLite page cache of the writer connection, in KiB, by default: the rollups and the newest
/// event pages stay hot, and after a restart the start-up read of the newest events fills at most
/// this much.
pub const DEFAULT_SQLITE_WRITER_CACHE_KIB: u32 = 4 * 1024;

/// SQLite page cache of each reader connection (up to 8 are kept), in KiB, by default.
pub const DEFAULT_SQLITE_READER_CACHE_KIB: u32 = 1024;

/// Like [`connect`], with the deduplication window the API enforces (events older than
/// `now − window` refused) and the clock it reads "now" from: a SQLite store then keeps in memory
/// only the keys of stored events inside the window. PostgreSQL keeps every key on disk and
/// ignores it.
pub async fn connect_with_window(url: &str, window: sqlite::DedupWindow) -> Result<Arc<dyn Store>> {
    open(url, true, window).await
}

/// Like [`connect`], for operator commands that never ingest events and may run next to a server:
/// a SQLite file is opened without its ingest lock (see [`sqlite`]). Same as [`connect`] for
/// PostgreSQL.
pub async fn connect_admin(url: &str) -> Result<Arc<dyn Store>> {
    open(url, false, sqlite::DedupWindow::default()).await
}

async fn open(url: &str, ingest: bool, window: sqlite::DedupWindow) -> Result<Arc<dyn Store>> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(StoreError::InvalidUrl(
                "sqlite:// needs a file path, e.g. sqlite://tally.db".into(),
            ));
        }
        let mut sync = sqlite::Synchronous::default();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            sync = match param {
                "synchronous=normal" => sqlite::Synchronous::Normal,
                "synchronous=full" => sqlite::Synchronous::Full,
                other => {
                    return Err(StoreError::InvalidUrl(format!(
                    "unknown SQLite option {other:?}: the only option is synchronous=normal|full"
                )))
                }
            };
        }
        Ok(Arc::new(if ingest {
            sqlite::SqliteStore::open_windowed(path, sync, window).await?
        } else {
            sqlite::SqliteStore::open_admin(path, sync).await?
        }))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::InvalidUrl(format!(
            "unsupported database URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DB"
        )))
    }
}

/// Hex SHA-256 of an API key secret, the form in which keys are stored.
pub fn hash_api_secret(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}
