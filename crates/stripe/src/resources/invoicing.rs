//! Invoices and invoice items: how Tally's usage lines reach a customer's Stripe invoice.

use super::{found, seg};
use crate::form::Form;
use crate::model::{Invoice, InvoiceItem, InvoiceLine, Metadata};
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// A new invoice item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoiceItem {
    /// Customer id.
    pub customer: String,
    /// Amount in minor units (negative for a credit).
    pub amount: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    /// What the customer reads on the invoice.
    pub description: String,
    /// The draft invoice to put it on; without one it waits for the customer's next invoice.
    pub invoice: Option<String>,
    /// `(start, end)` of the period it bills (unix seconds).
    pub period: Option<(i64, i64)>,
    /// Metadata.
    pub metadata: Metadata,
}

/// A new invoice (`POST /v1/invoices`): pending invoice items are left out, so that the invoice
/// holds exactly the items put on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvoice {
    /// Customer id.
    pub customer: String,
    /// Lowercase ISO currency.
    pub currency: String,
    /// The subscription it belongs to: its default payment method pays it.
    pub subscription: Option<String>,
    /// What the customer reads on the invoice.
    pub description: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

/// Filter of `GET /v1/invoices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceFilter {
    /// Only this customer's.
    pub customer: Option<String>,
    /// Only this subscription's.
    pub subscription: Option<String>,
    /// Created at or after (unix seconds).
    pub created_gte: Option<i64>,
    /// Created before (unix seconds).
    pub created_lt: Option<i64>,
}

impl Client {
    /// `POST /v1/invoiceitems`.
    pub async fn create_invoice_item(
        &self,
        item: &NewInvoiceItem,
        key: &IdempotencyKey,
    ) -> Result<Stripe<InvoiceItem>, Error> {
        let mut f = Form::new();
        f.set("customer", &item.customer)
            .set("amount", item.amount)
            .set("currency", &item.currency)
            .set("description", &item.description)
            .opt("invoice", item.invoice.as_ref())
            .map("metadata", &item.metadata);
        if let Some((start, end)) = item.period {
            f.set("period[start]", start).set("period[end]", end);
        }
        let r = self
            .post::<wire::InvoiceItem>("/v1/invoiceitems", &f, key)
            .await?;
        Ok(r.map(InvoiceItem::from))
    }

    /// `DELETE /v1/invoiceitems/{id}` (only while its invoice is a draft). Returns whether it
    /// existed.
    pub async fn delete_invoice_item(&self, id: &str) -> Result<bool, Error> {
        let path = format!("/v1/invoiceitems/{}", seg(id));
        let r = found(self.delete::<wire::Deleted>(&path, &Form::new()).await)?;
        Ok(r.is_some_and(|d| d.value.deleted && d.value.id == id))
    }

    /// `POST /v1/invoices`: a draft that collects automatically, without pending items.
    pub async fn create_invoice(
        &self,
        inv: &NewInvoice,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Invoice>, Error> {
        let mut f = Form::new();
        f.set("customer", &inv.customer)
            .set("currency", &inv.currency)
            .set("collection_method", "charge_automatically")
            .set("pending_invoice_items_behavior", "exclude")
            .set("auto_advance", false)
            .opt("subscription", inv.subscription.as_ref())
            .opt("description", inv.description.as_ref())
            .map("metadata", &inv.metadata);
        let r = self.post::<wire::Invoice>("/v1/invoices", &f, key).await?;
        Ok(r.map(Invoice::from))
    }

    /// `GET /v1/invoices/{id}`; None when it does not exist.
    pub async fn invoice(&self, id: &str) -> Result<Option<Stripe<Invoice>>, Error> {
        let path = format!("/v1/invoices/{}", seg(id));
        let r = found(self.get::<wire::Invoice>(&path, &Form::new()).await)?;
        Ok(r.map(|r| r.map(Invoice::from)))
    }

    /// Every line of an invoice (`GET /v1/invoices/{id}/lines`, all pages).
    pub async fn invoice_lines(&self, id: &str) -> Result<Vec<InvoiceLine>, Error> {
        let path = format!("/v1/invoices/{}/lines", seg(id));
        let mut out: Vec<InvoiceLine> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("limit", 100);
            if let Some(last) = out.last().and_then(|l| l.id.clone()) {
                q.set("starting_after", last);
            }
            let page = self
                .get::<wire::List<wire::InvoiceLine>>(&path, &q)
                .await?
                .value
                .into_page(InvoiceLine::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// Every invoice matching `filter` (`GET /v1/invoices`, all pages), newest first.
    pub async fn invoices(&self, filter: &InvoiceFilter) -> Result<Vec<Invoice>, Error> {
        let mut out: Vec<Invoice> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("limit", 100)
                .opt("customer", filter.customer.as_ref())
                .opt("subscription", filter.subscription.as_ref())
                .opt("created[gte]", filter.created_gte)
                .opt("created[lt]", filter.created_lt);
            if let Some(last) = out.last().and_then(|i| i.id.clone()) {
                q.set("starting_after", last);
            }
            let page = self
                .get::<wire::List<wire::Invoice>>("/v1/invoices", &q)
                .await?
                .value
                .into_page(Invoice::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/invoices/{id}/finalize` with `auto_advance=true`, so that Stripe keeps
    /// collecting it (its retry schedule) after a failed payment.
    pub async fn finalize_invoice(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Invoice>, Error> {
        let mut f = Form::new();
        f.set("auto_advance", true);
        let path = format!("/v1/invoices/{}/finalize", seg(id));
        let r = self.post::<wire::Invoice>(&path, &f, key).await?;
        Ok(r.map(Invoice::from))
    }

    /// `POST /v1/invoices/{id}/pay`: charges the customer's default payment method now.
    pub async fn pay_invoice(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Invoice>, Error> {
        let path = format!("/v1/invoices/{}/pay", seg(id));
        let r = self.post::<wire::Invoice>(&path, &Form::new(), key).await?;
        Ok(r.map(Invoice::from))
    }
}
