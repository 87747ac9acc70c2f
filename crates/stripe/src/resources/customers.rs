//! Customers.

use super::{found, seg};
use crate::form::Form;
use crate::model::{Customer, Metadata};
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// Fields of a new customer or of an update (None leaves a field alone on update).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerParams {
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Metadata entries to set (Tally's ids go here).
    pub metadata: Metadata,
}

impl CustomerParams {
    pub(crate) fn form(&self) -> Form {
        let mut f = Form::new();
        f.opt("email", self.email.as_ref())
            .opt("name", self.name.as_ref())
            .map("metadata", &self.metadata);
        f
    }
}

impl Client {
    /// `POST /v1/customers`.
    pub async fn create_customer(
        &self,
        params: &CustomerParams,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Customer>, Error> {
        let r = self
            .post::<wire::Customer>("/v1/customers", &params.form(), key)
            .await?;
        Ok(r.map(Customer::from))
    }

    /// `POST /v1/customers/{id}`.
    pub async fn update_customer(
        &self,
        id: &str,
        params: &CustomerParams,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Customer>, Error> {
        let path = format!("/v1/customers/{}", seg(id));
        let r = self
            .post::<wire::Customer>(&path, &params.form(), key)
            .await?;
        Ok(r.map(Customer::from))
    }

    /// `GET /v1/customers/{id}`; None when it does not exist.
    pub async fn customer(&self, id: &str) -> Result<Option<Stripe<Customer>>, Error> {
        let path = format!("/v1/customers/{}", seg(id));
        let r = found(self.get::<wire::Customer>(&path, &Form::new()).await)?;
        Ok(r.map(|r| r.map(Customer::from)))
    }

    /// Customers whose `metadata[key]` is `value` (`GET /v1/customers/search`), e.g. to find the
    /// customer Tally created before a crash. Stripe's search index lags writes by up to a minute.
    pub async fn find_customers_by_metadata(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Stripe<Vec<Customer>>, Error> {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
        let mut q = Form::new();
        q.set(
            "query",
            format!("metadata['{}']:'{}'", esc(key), esc(value)),
        )
        .set("limit", 100);
        let r = self
            .get::<wire::SearchResult<wire::Customer>>("/v1/customers/search", &q)
            .await?;
        Ok(r.map(|l| l.data.into_iter().map(Customer::from).collect()))
    }
}
