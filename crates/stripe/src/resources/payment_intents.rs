//! Off-session charges of a customer's saved card (automatic top-ups).

use super::seg;
use crate::form::Form;
use crate::model::{Metadata, PaymentIntent};
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// A payment intent created and confirmed at once, off-session, on a saved card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffSessionPayment {
    /// `cus_…`.
    pub customer: String,
    /// `pm_…`: the customer's card.
    pub payment_method: String,
    /// Minor units.
    pub amount: i64,
    /// Lowercase ISO currency.
    pub currency: String,
    /// What the customer's statement and receipts say.
    pub description: Option<String>,
    /// Tally's ids.
    pub metadata: Metadata,
}

impl Client {
    /// `POST /v1/payment_intents` with `confirm=true` and `off_session=true`: charges the card
    /// now. A decline is an [`crate::ErrorKind::CardDeclined`] error (Stripe answers 402).
    pub async fn create_off_session_payment(
        &self,
        p: &NewOffSessionPayment,
        key: &IdempotencyKey,
    ) -> Result<Stripe<PaymentIntent>, Error> {
        let mut f = Form::new();
        f.set("amount", p.amount)
            .set("currency", &p.currency)
            .set("customer", &p.customer)
            .set("payment_method", &p.payment_method)
            .set("confirm", "true")
            .set("off_session", "true")
            .opt("description", p.description.as_ref())
            .map("metadata", &p.metadata);
        let res = self
            .post::<wire::PaymentIntent>("/v1/payment_intents", &f, key)
            .await?;
        Ok(res.map(PaymentIntent::from))
    }

    /// A customer's payment intents created at or after `since` (unix seconds), every page,
    /// newest first: to find a charge by its metadata after an unanswered call.
    pub async fn payment_intents_of_customer(
        &self,
        customer: &str,
        since: i64,
    ) -> Result<Vec<PaymentIntent>, Error> {
        let mut out: Vec<PaymentIntent> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("customer", customer)
                .set("created[gte]", since)
                .set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page = self
                .get::<wire::List<wire::PaymentIntent>>("/v1/payment_intents", &q)
                .await?
                .value
                .into_page(PaymentIntent::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// The customer's default payment method (`invoice_settings.default_payment_method`).
    pub async fn default_payment_method(&self, customer: &str) -> Result<Option<String>, Error> {
        let path = format!("/v1/customers/{}", seg(customer));
        let c = self.get::<wire::Customer>(&path, &Form::new()).await?;
        Ok(c.value
            .invoice_settings
            .and_then(|i| i.default_payment_method))
    }
}
