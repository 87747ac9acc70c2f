//! The PostgreSQL backend, for several Tally processes sharing one database.
//!
//! Dedup is the unique constraint on `events (customer_id, event_id)` with
//! `INSERT … ON CONFLICT DO NOTHING`: a concurrent identical batch waits for the first one's
//! transaction and then inserts nothing. `events` is partitioned by `HASH (customer_id)`, so that
//! constraint (which contains the partition key) holds across partitions and every query of one
//! customer reads one partition (migration 0004). Rollups are upserted with SQL arithmetic on
//! NUMERIC in the same transaction; concurrent requests' batches share one statement (group
//! commit, `ingest_group`), each keeping its own all-or-nothing outcome. Ingest holds `FOR SHARE` locks on the batch's customers and
//! period close takes `FOR UPDATE`, so no event slips into a period between reading its usage and
//! writing its invoice.
//! Rows are locked in key order to avoid deadlocks; a deadlock or serialization failure is retried.
//! PostgreSQL flushes the WAL of concurrent commits together, so concurrent requests share fsyncs.

mod api_keys;
mod audit;
mod credits;
mod customers;
mod events;
mod history;
mod ingest_group;
mod invoices;
mod migrate;
mod notify;
mod pages;
mod ratelimit;
mod stripe;
mod stripe_invoices;
mod stripe_links;
mod topups;
mod usage_push;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Config, Pool, Runtime};
use tokio_postgres::NoTls;

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

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// Concurrent ingest requests merged into shared statements.
    ingest: std::sync::Arc<ingest_group::IngestGroups>,
    /// Rate-limit admissions so far (to prune passed windows now and then).
    rate_admissions: std::sync::atomic::AtomicU64,
}

impl PgStore {
    /// Connects to `url`, checks the connection and applies pending migrations (serialized across
    /// processes by an advisory lock).
    pub async fn connect(url: &str) -> Result<PgStore> {
        let pool = pool(url)?;
        let mut client = pool.get().await?;
        migrate::run(&mut client).await?;
        drop(client);
        Ok(PgStore {
            ingest: ingest_group::IngestGroups::new(pool.clone()),
            pool,
            rate_admissions: Default::default(),
        })
    }
}

fn pool(url: &str) -> Result<Pool> {
    let cfg = Config {
        url: Some(url.to_owned()),
        ..Config::default()
    };
    cfg.create_pool(Some(Runtime::Tokio1), NoTls)
        .map_err(|e| StoreError::InvalidUrl(e.to_string()))
}

/// Applies the migrations up to and including `version` only, without opening a store (tests of a
/// later migration start from an older schema).
pub(crate) async fn migrate_to(url: &str, version: i64) -> Result<()> {
    let pool = pool(url)?;
    let mut client = pool.get().await?;
    migrate::run_to(&mut client, version).await
}

/// Whether a failed transaction may simply be retried.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *c == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Why one attempt of a retried transaction failed: a PostgreSQL error (retried when
/// [`is_retryable`]) or a store error (returned as is).
pub(crate) enum Failure {
    Pg(tokio_postgres::Error),
    Store(crate::StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<crate::StoreError> for Failure {
    fn from(e: crate::StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Failure::Store(e.into())
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn ping(&self) -> Result<()> {
        let c = self.pool.get().await?;
        c.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close();
    }

    async fn upsert_customer_audited(
        &self,
        c: CustomerUpsert,
        audit: Option<AuditContext>,
    ) -> Result<(Customer, bool)> {
        customers::upsert(&self.pool, &c, audit).await
    }

    async fn get_customer(&self, id: &str) -> Result<Option<Customer>> {
        customers::get(&self.pool, id).await
    }

    async fn list_customers_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Customer>> {
        customers::list_after(&self.pool, after, limit).await
    }

    async fn customer_anchors(&self, ids: &[String]) -> Result<Vec<crate::CustomerAnchors>> {
        customers::anchors(&self.pool, ids).await
    }

    async fn set_allowance_anchor(&self, customer_id: &str, anchor: DateTime<Utc>) -> Result<bool> {
        customers::set_allowance_anchor(&self.pool, customer_id, anchor).await
    }

    async fn anchor_version(&self) -> Result<i64> {
        customers::anchor_version(&self.pool).await
    }

    async fn put_subscription_audited(
        &self,
        s: SubscriptionUpsert,
        audit: Option<AuditContext>,
    ) -> Result<Subscription> {
        customers::put_subscription(&self.pool, &s, audit).await
    }

    async fn get_subscription(&self, customer_id: &str) -> Result<Option<Subscription>> {
        customers::get_subscription(&self.pool, customer_id).await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        customers::list_subscriptions(&self.pool).await
    }

    async fn ingest(&self, events: Vec<NewEvent>) -> Result<IngestOutcome> {
        self.ingest.ingest(events).await
    }

    async fn usage(&self, customer_id: &str, billed: DateTime<Utc>) -> Result<Vec<UsageRollup>> {
        let c = self.pool.get().await?;
        events::usage(&c, customer_id, billed).await
    }

    async fn event_ids(&self, customer_id: &str) -> Result<Vec<String>> {
        events::event_ids(&self.pool, customer_id).await
    }

    async fn event_count(&self) -> Result<u64> {
        events::count(&self.pool).await
    }

    async fn close_period(
        &self,
        customer_id: &str,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
        build: InvoiceBuilder,
    ) -> Result<Option<StoredInvoice>> {
        invoices::close_period(&self.pool, customer_id, period_start, period_end, build).await
    }

    async fn list_invoices(&self, customer_id: &str) -> Result<Vec<StoredInvoice>> {
        invoices::list(&self.pool, customer_id).await
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                 WHERE leases.until <= $3 OR leases.holder = EXCLUDED.holder
                 RETURNING holder",
                &[&name, &holder, &now, &until],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn clock_offset(&self) -> Result<Option<i64>> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT offset_ms FROM clock_offset WHERE id = 1", &[])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set_clock_offset(&self, offset_ms: i64, now: DateTime<Utc>) -> Result<()> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO clock_offset (id, offset_ms, updated_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET offset_ms = EXCLUDED.offset_ms, updated_at = EXCLUDED.updated_at",
            &[&offset_ms, &now],
        )
        .await?;
        Ok(())
    }

    fn shares_rate_limits(&self) -> bool {
        true
    }

    async fn rate_admit(
        &self,
        key: &str,
        interval: std::time::Duration,
        burst: std::time::Duration,
    ) -> Result<Option<std::time::Duration>> {
        ratelimit::admit(&self.pool, &self.rate_admissions, key, interval, burst).await
    }

    async fn create_api_key_audited(
        &self,
        key: NewApiKey,
        audit: Option<AuditContext>,
    ) -> Result<ApiKey> {
        api_keys::create(&self.pool, &key, audit).await
    }

    async fn find_api_key(&self, secret_hash: &str) -> Result<Option<ApiKey>> {
        api_keys::find(&self.pool, secret_hash).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        api_keys::list(&self.pool).await
    }

    async fn revoke_api_key_audited(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        api_keys::revoke(&self.pool, id, at, audit).await
    }

    async fn credit_apply(&self, req: CreditRequest) -> Result<CreditOutcome> {
        credits::apply(&self.pool, req).await
    }

    async fn credit_account(
        &self,
        customer_id: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<CreditAccount> {
        credits::account(&self.pool, customer_id, limit, before_seq).await
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<()> {
        let c = self.pool.get().await?;
        audit::insert(&c, &entry).await
    }

    async fn audit_log(&self, filter: AuditFilter) -> Result<AuditPage> {
        audit::list(&self.pool, &filter).await
    }

    async fn notifications(&self, customer_id: &str) -> Result<Vec<UsageNotification>> {
        notify::usage(&self.pool, customer_id).await
    }

    async fn enqueue_notification(&self, n: NewNotification) -> Result<bool> {
        notify::enqueue_alone(&self.pool, &n).await
    }

    async fn list_notifications(&self, filter: NotificationFilter) -> Result<Vec<Notification>> {
        notify::list(&self.pool, &filter).await
    }

    async fn create_webhook_endpoint_audited(
        &self,
        e: NewWebhookEndpoint,
        audit: Option<AuditContext>,
    ) -> Result<WebhookEndpoint> {
        notify::create_endpoint(&self.pool, &e, audit).await
    }

    async fn list_webhook_endpoints(&self) -> Result<Vec<WebhookEndpoint>> {
        notify::list_endpoints(&self.pool).await
    }

    async fn get_webhook_endpoint(&self, id: &str) -> Result<Option<WebhookEndpoint>> {
        notify::get_endpoint(&self.pool, id).await
    }

    async fn delete_webhook_endpoint_audited(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        notify::delete_endpoint(&self.pool, id, at, audit).await
    }

    async fn rotate_webhook_endpoint_secret_audited(
        &self,
        id: &str,
        new_secret: &str,
        previous_until: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<Option<WebhookEndpoint>> {
        notify::rotate(&self.pool, id, new_secret, previous_until, audit).await
    }

    async fn set_email_channel(
        &self,
        events: Option<Vec<String>>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        notify::set_email_channel(&self.pool, events.as_deref(), now).await
    }

    async fn disable_webhook_endpoint(
        &self,
        id: &str,
        at: DateTime<Utc>,
        notice: NewNotification,
    ) -> Result<bool> {
        notify::disable(&self.pool, id, at, &notice).await
    }

    async fn claim_deliveries(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        notify::claim(&self.pool, holder, now, until, limit).await
    }

    async fn finish_delivery(
        &self,
        attempt: DeliveryAttempt,
    ) -> Result<Option<Option<DateTime<Utc>>>> {
        notify::finish(&self.pool, &attempt).await
    }

    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>> {
        notify::deliveries(&self.pool, endpoint_id, limit).await
    }

    async fn replay_notification(&self, id: &str, now: DateTime<Utc>) -> Result<Option<u64>> {
        notify::replay(&self.pool, id, now).await
    }

    async fn oldest_pending_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        notify::oldest_pending(&self.pool).await
    }

    async fn put_flag_override_audited(
        &self,
        o: FlagOverride,
        audit: Option<AuditContext>,
    ) -> Result<()> {
        credits::put_flag_override(&self.pool, &o, audit).await
    }

    async fn delete_flag_override_audited(
        &self,
        customer_id: &str,
        flag: &str,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        credits::delete_flag_override(&self.pool, customer_id, flag, audit).await
    }

    async fn flag_overrides(&self, customer_id: &str) -> Result<Vec<FlagOverride>> {
        credits::flag_overrides(&self.pool, customer_id).await
    }

    async fn inbox_insert(&self, event: NewInboxEvent) -> Result<bool> {
        stripe::insert(&self.pool, &event).await
    }

    async fn inbox_claim(
        &self,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>> {
        stripe::claim(&self.pool, holder, now, until, limit).await
    }

    async fn inbox_finish(
        &self,
        event_id: &str,
        holder: &str,
        outcome: InboxOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        stripe::finish(&self.pool, event_id, holder, &outcome, now).await
    }

    async fn inbox_oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        let c = self.pool.get().await?;
        Ok(c.query_one(
            "SELECT MIN(received_at) FROM stripe_events WHERE status = 'pending'",
            &[],
        )
        .await?
        .get(0))
    }

    async fn inbox_list(&self, filter: InboxFilter) -> Result<Vec<InboxEvent>> {
        stripe::list(&self.pool, &filter).await
    }

    async fn inbox_get(&self, event_id: &str) -> Result<Option<InboxEvent>> {
        stripe::get(&self.pool, event_id).await
    }

    async fn inbox_replay(
        &self,
        event_id: Option<&str>,
        since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        stripe::replay(&self.pool, event_id, since, now).await
    }

    async fn put_stripe_subscription(&self, sub: StripeSubscriptionUpsert) -> Result<Subscription> {
        stripe::put_subscription(&self.pool, &sub).await
    }

    async fn record_transaction(&self, t: NewTransaction) -> Result<bool> {
        stripe::record_transaction(&self.pool, &t).await
    }

    async fn transactions(
        &self,
        customer_id: &str,
        limit: usize,
        starting_after: Option<&str>,
    ) -> Result<Vec<Transaction>> {
        stripe::transactions(&self.pool, customer_id, limit, starting_after).await
    }

    async fn subscription_history(
        &self,
        customer_id: Option<&str>,
    ) -> Result<Vec<crate::SubscriptionChangeRecord>> {
        history::list(&self.pool, customer_id).await
    }

    async fn transactions_before(&self, before: DateTime<Utc>) -> Result<Vec<Transaction>> {
        history::transactions_before(&self.pool, before).await
    }

    async fn invoices_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<crate::StoredInvoice>> {
        history::invoices_between(&self.pool, from, to).await
    }

    async fn create_page_session(
        &self,
        s: NewPageSession,
        audit: Option<AuditContext>,
    ) -> Result<PageSession> {
        pages::create(&self.pool, &s, audit).await
    }

    async fn redeem_page_code(
        &self,
        code_hash: &str,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PageSession>> {
        pages::redeem(&self.pool, code_hash, token_hash, now).await
    }

    async fn touch_page_session(
        &self,
        token_hash: &str,
        check: PageSessionCheck,
    ) -> Result<Option<PageSession>> {
        pages::touch(&self.pool, token_hash, check).await
    }

    async fn get_page_session(&self, id: &str) -> Result<Option<PageSession>> {
        pages::get(&self.pool, id).await
    }

    async fn revoke_page_session(
        &self,
        id: &str,
        at: DateTime<Utc>,
        audit: Option<AuditContext>,
    ) -> Result<bool> {
        pages::revoke(&self.pool, id, at, audit).await
    }

    async fn claim_stripe_customer(
        &self,
        customer_id: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::StripeCustomerLink> {
        stripe_links::claim(&self.pool, customer_id, now).await
    }

    async fn stripe_customer(
        &self,
        customer_id: &str,
    ) -> Result<Option<crate::StripeCustomerLink>> {
        stripe_links::link(&self.pool, customer_id).await
    }

    async fn set_stripe_customer(
        &self,
        customer_id: &str,
        stripe_id: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::StripeCustomerLink> {
        stripe_links::set(&self.pool, customer_id, stripe_id, now).await
    }

    async fn insert_checkout(&self, row: crate::CheckoutRecord) -> Result<()> {
        stripe_links::insert_checkout(&self.pool, &row).await
    }

    async fn finish_checkout(
        &self,
        id: &str,
        outcome: crate::CallOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        stripe_links::finish_checkout(&self.pool, id, &outcome, now).await
    }

    async fn checkout(&self, id: &str) -> Result<Option<crate::CheckoutRecord>> {
        stripe_links::checkout(&self.pool, id).await
    }

    async fn redeem_coupon(
        &self,
        r: crate::CouponRedemption,
        audit: Option<AuditContext>,
    ) -> Result<crate::RedeemOutcome> {
        stripe_links::redeem_coupon(&self.pool, &r, audit).await
    }

    async fn insert_plan_change(&self, row: crate::PlanChangeRecord) -> Result<()> {
        stripe_links::insert_plan_change(&self.pool, &row).await
    }

    async fn finish_plan_change(
        &self,
        id: &str,
        outcome: crate::CallOutcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        stripe_links::finish_plan_change(&self.pool, id, &outcome, now).await
    }

    async fn invoices_to_push(&self, limit: usize) -> Result<Vec<StoredInvoice>> {
        usage_push::to_push(&self.pool, limit).await
    }

    async fn invoices_starting_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<StoredInvoice>> {
        usage_push::starting_between(&self.pool, from, to).await
    }

    async fn insert_push(&self, push: crate::InvoicePush) -> Result<crate::InvoicePush> {
        usage_push::insert(&self.pool, &push).await
    }

    async fn get_push(&self, invoice_id: &str) -> Result<Option<crate::InvoicePush>> {
        usage_push::get(&self.pool, invoice_id).await
    }

    async fn put_stripe_invoice(&self, invoice: crate::StripeInvoiceRecord) -> Result<bool> {
        stripe_invoices::put(&self.pool, &invoice).await
    }

    async fn stripe_invoices_of_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<crate::StripeInvoiceRecord>> {
        stripe_invoices::of_customer(&self.pool, customer_id).await
    }

    async fn stripe_invoices_before(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<crate::StripeInvoiceRecord>> {
        stripe_invoices::before(&self.pool, before).await
    }

    async fn pushes_of_customer(&self, customer_id: &str) -> Result<Vec<crate::InvoicePush>> {
        usage_push::of_customer(&self.pool, customer_id).await
    }

    async fn pushes_of_stripe_invoice(
        &self,
        stripe_invoice: &str,
    ) -> Result<Vec<crate::InvoicePush>> {
        usage_push::of_stripe_invoice(&self.pool, stripe_invoice).await
    }

    async fn due_pushes(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>> {
        usage_push::due(&self.pool, now, limit).await
    }

    async fn claim_push(
        &self,
        invoice_id: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<crate::InvoicePush>> {
        usage_push::claim(&self.pool, invoice_id, holder, now, until).await
    }

    async fn set_push_invoice(
        &self,
        invoice_id: &str,
        target: crate::PushTarget,
        stripe_invoice: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<crate::InvoicePush>> {
        usage_push::set_invoice(&self.pool, invoice_id, target, stripe_invoice, now).await
    }

    async fn finish_push(
        &self,
        invoice_id: &str,
        holder: &str,
        outcome: crate::PushOutcome,
    ) -> Result<bool> {
        usage_push::finish(&self.pool, invoice_id, holder, &outcome).await
    }

    async fn set_push_hosted_url(&self, stripe_invoice: &str, url: &str) -> Result<u64> {
        usage_push::set_hosted_url(&self.pool, stripe_invoice, url).await
    }

    async fn set_push_state_of_stripe_invoice(
        &self,
        stripe_invoice: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        usage_push::set_state_of_stripe_invoice(&self.pool, stripe_invoice, state, now).await
    }

    async fn insert_refund(&self, r: crate::RefundRecord) -> Result<(crate::RefundRecord, bool)> {
        usage_push::insert_refund(&self.pool, &r).await
    }

    async fn update_refund(&self, r: &crate::RefundRecord) -> Result<()> {
        usage_push::update_refund(&self.pool, r).await
    }

    async fn refunds_of_payment_intent(
        &self,
        payment_intent: &str,
    ) -> Result<Vec<crate::RefundRecord>> {
        usage_push::refunds_of(&self.pool, payment_intent).await
    }

    async fn stripe_customer_links(&self) -> Result<Vec<crate::StripeCustomerLink>> {
        stripe_links::all_links(&self.pool).await
    }

    async fn put_auto_topup(&self, settings: crate::AutoTopup) -> Result<crate::AutoTopup> {
        topups::put_settings(&self.pool, &settings).await
    }

    async fn get_auto_topup(&self, customer_id: &str) -> Result<Option<crate::AutoTopup>> {
        topups::get_settings(&self.pool, customer_id).await
    }

    async fn delete_auto_topup(&self, customer_id: &str) -> Result<bool> {
        topups::delete_settings(&self.pool, customer_id).await
    }

    async fn request_topup(&self, t: crate::NewTopup) -> Result<crate::TopupRequest> {
        topups::request(&self.pool, &t).await
    }

    async fn claim_topups(
        &self,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<crate::TopupRecord>> {
        topups::claim(&self.pool, now, until, limit).await
    }

    async fn get_topup(&self, id: &str) -> Result<Option<crate::TopupRecord>> {
        topups::get(&self.pool, id).await
    }

    async fn topups_of_customer(
        &self,
        customer_id: &str,
        limit: usize,
    ) -> Result<Vec<crate::TopupRecord>> {
        topups::of_customer(&self.pool, customer_id, limit).await
    }

    async fn retry_topup(&self, r: crate::TopupRetry) -> Result<()> {
        topups::retry(&self.pool, &r).await
    }

    async fn finish_topup(&self, f: crate::TopupFinish) -> Result<bool> {
        topups::finish(&self.pool, &f).await
    }

    async fn reset_topup_failures(&self, customer_id: &str, now: DateTime<Utc>) -> Result<bool> {
        topups::reset(&self.pool, customer_id, now).await
    }

    async fn topup_retries_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<String>> {
        topups::retries_due(&self.pool, now, limit).await
    }

    async fn clear_topup_retry(&self, customer_id: &str) -> Result<()> {
        topups::clear_retry(&self.pool, customer_id).await
    }
}
