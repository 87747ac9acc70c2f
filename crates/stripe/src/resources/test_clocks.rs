//! Test clocks (test mode only): customers made on a clock live in its time, and advancing it
//! plays out their renewals, invoices and retries.

use serde::Deserialize;

use super::{found, seg};
use crate::form::Form;
use crate::model::{Customer, Page};
use crate::resources::customers::CustomerParams;
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// A test clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestClock {
    /// `clock_…`.
    pub id: String,
    /// Its time (unix seconds).
    pub frozen_time: i64,
    /// Its name.
    pub name: Option<String>,
    /// `ready`, `advancing` or `internal_failure`.
    pub status: String,
}

#[derive(Deserialize)]
struct WireClock {
    id: String,
    frozen_time: i64,
    name: Option<String>,
    status: String,
}

impl From<WireClock> for TestClock {
    fn from(c: WireClock) -> Self {
        TestClock {
            id: c.id,
            frozen_time: c.frozen_time,
            name: c.name,
            status: c.status,
        }
    }
}

impl Client {
    /// `POST /v1/test_helpers/test_clocks`.
    pub async fn create_test_clock(
        &self,
        frozen_time: i64,
        name: &str,
        key: &IdempotencyKey,
    ) -> Result<Stripe<TestClock>, Error> {
        let mut f = Form::new();
        f.set("frozen_time", frozen_time).set("name", name);
        let r = self
            .post::<WireClock>("/v1/test_helpers/test_clocks", &f, key)
            .await?;
        Ok(r.map(TestClock::from))
    }

    /// `GET /v1/test_helpers/test_clocks/{id}`; None when it does not exist.
    pub async fn test_clock(&self, id: &str) -> Result<Option<Stripe<TestClock>>, Error> {
        let path = format!("/v1/test_helpers/test_clocks/{}", seg(id));
        let r = found(self.get::<WireClock>(&path, &Form::new()).await)?;
        Ok(r.map(|r| r.map(TestClock::from)))
    }

    /// Every test clock of the account (`GET /v1/test_helpers/test_clocks`, every page).
    pub async fn test_clocks(&self) -> Result<Vec<TestClock>, Error> {
        let mut out: Vec<TestClock> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page: Page<TestClock> = self
                .get::<wire::List<WireClock>>("/v1/test_helpers/test_clocks", &q)
                .await?
                .value
                .into_page(TestClock::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/test_helpers/test_clocks/{id}/advance`: Stripe moves the clock to
    /// `frozen_time` in the background (status `advancing`, then `ready`).
    pub async fn advance_test_clock(
        &self,
        id: &str,
        frozen_time: i64,
        key: &IdempotencyKey,
    ) -> Result<Stripe<TestClock>, Error> {
        let mut f = Form::new();
        f.set("frozen_time", frozen_time);
        let path = format!("/v1/test_helpers/test_clocks/{}/advance", seg(id));
        let r = self.post::<WireClock>(&path, &f, key).await?;
        Ok(r.map(TestClock::from))
    }

    /// `POST /v1/customers` with `test_clock`: the customer lives in the clock's time.
    pub async fn create_customer_on_clock(
        &self,
        params: &CustomerParams,
        clock: &str,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Customer>, Error> {
        let mut f = params.form();
        f.set("test_clock", clock);
        let r = self
            .post::<wire::Customer>("/v1/customers", &f, key)
            .await?;
        Ok(r.map(Customer::from))
    }
}
