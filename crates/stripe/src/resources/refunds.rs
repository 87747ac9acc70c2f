//! Refunds, and the payment intents and charges they refund.

use super::{found, seg};
use crate::form::Form;
use crate::model::{Charge, Metadata, PaymentIntent, Refund};
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// A new refund of (part of) a payment intent's charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// `pi_…`.
    pub payment_intent: String,
    /// Minor units.
    pub amount: i64,
    /// `duplicate`, `fraudulent` or `requested_by_customer`.
    pub reason: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

impl Client {
    /// `POST /v1/refunds`.
    pub async fn create_refund(
        &self,
        r: &NewRefund,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Refund>, Error> {
        let mut f = Form::new();
        f.set("payment_intent", &r.payment_intent)
            .set("amount", r.amount)
            .opt("reason", r.reason.as_ref())
            .map("metadata", &r.metadata);
        let res = self.post::<wire::Refund>("/v1/refunds", &f, key).await?;
        Ok(res.map(Refund::from))
    }

    /// `GET /v1/payment_intents/{id}`; None when it does not exist.
    pub async fn payment_intent(&self, id: &str) -> Result<Option<Stripe<PaymentIntent>>, Error> {
        let path = format!("/v1/payment_intents/{}", seg(id));
        let r = found(self.get::<wire::PaymentIntent>(&path, &Form::new()).await)?;
        Ok(r.map(|r| r.map(PaymentIntent::from)))
    }

    /// `GET /v1/charges/{id}`; None when it does not exist.
    pub async fn charge(&self, id: &str) -> Result<Option<Stripe<Charge>>, Error> {
        let path = format!("/v1/charges/{}", seg(id));
        let r = found(self.get::<wire::Charge>(&path, &Form::new()).await)?;
        Ok(r.map(|r| r.map(Charge::from)))
    }

    /// The payment intent that paid an invoice (`GET /v1/invoice_payments?invoice=`), if any.
    pub async fn invoice_payment_intent(&self, invoice: &str) -> Result<Option<String>, Error> {
        let mut q = Form::new();
        q.set("invoice", invoice).set("limit", 10);
        let page = self
            .get::<wire::List<wire::InvoicePayment>>("/v1/invoice_payments", &q)
            .await?
            .value;
        Ok(page
            .data
            .into_iter()
            .find_map(|p| p.payment.and_then(|d| d.payment_intent)))
    }

    /// Why the latest attempt to collect an invoice failed (its payment intent's
    /// `last_payment_error`), if it did.
    pub async fn invoice_payment_error(
        &self,
        invoice: &str,
    ) -> Result<Option<crate::model::PaymentError>, Error> {
        let Some(pi) = self.invoice_payment_intent(invoice).await? else {
            return Ok(None);
        };
        Ok(self
            .payment_intent(&pi)
            .await?
            .and_then(|p| p.value.last_payment_error))
    }

    /// A customer's charges created in `[from, to)` (unix seconds; `GET /v1/charges`, every
    /// page), newest first.
    pub async fn charges_of_customer(
        &self,
        customer: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<Charge>, Error> {
        let mut out: Vec<Charge> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("customer", customer)
                .set("created[gte]", from)
                .set("created[lt]", to)
                .set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page = self
                .get::<wire::List<wire::Charge>>("/v1/charges", &q)
                .await?
                .value
                .into_page(Charge::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }
}
