//! Products, prices, coupons, promotion codes and Customer Portal configurations.

use super::{found, seg, try_map};
use crate::form::Form;
use crate::model::{
    Coupon, CouponDiscount, CouponDuration, Metadata, Page, PortalConfiguration, Price, Product,
    PromotionCode, Recurring,
};
use crate::{wire, Client, Error, IdempotencyKey, Stripe};

/// A new product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    /// Custom id (Stripe allows them for products); None lets Stripe choose.
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// Metadata.
    pub metadata: Metadata,
}

/// Changes to a product (None leaves a field alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductUpdate {
    /// New name.
    pub name: Option<String>,
    /// Activate or archive.
    pub active: Option<bool>,
    /// Metadata entries to set.
    pub metadata: Metadata,
}

/// A new flat price (`unit_amount`), recurring or one-time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPrice {
    /// Product id.
    pub product: String,
    /// Lowercase ISO currency.
    pub currency: String,
    /// Minor units.
    pub unit_amount: i64,
    /// None for a one-time price.
    pub recurring: Option<Recurring>,
    /// Lookup key.
    pub lookup_key: Option<String>,
    /// Take the lookup key from the price that has it (prices are immutable, so a new amount is a
    /// new price that inherits the key).
    pub transfer_lookup_key: bool,
    /// Metadata.
    pub metadata: Metadata,
}

/// A new coupon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCoupon {
    /// Custom id (Stripe allows them for coupons).
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// Percent or amount off.
    pub discount: CouponDiscount,
    /// Duration.
    pub duration: CouponDuration,
    /// Redemption limit.
    pub max_redemptions: Option<u32>,
    /// Last redemption instant (unix seconds).
    pub redeem_by: Option<i64>,
    /// Products it is limited to; empty means all.
    pub applies_to_products: Vec<String>,
    /// Metadata.
    pub metadata: Metadata,
}

/// A new promotion code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPromotionCode {
    /// Coupon id.
    pub coupon: String,
    /// The code customers type.
    pub code: String,
    /// Metadata.
    pub metadata: Metadata,
}

/// What the Customer Portal lets customers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalConfigurationParams {
    /// Cancel, at the period end.
    pub cancel_at_period_end: bool,
    /// Switch between these prices, per product: (product id, price ids).
    pub switch_prices: Vec<(String, Vec<String>)>,
    /// Proration of switches: `create_prorations`, `always_invoice` or `none`.
    pub proration_behavior: String,
    /// Replace the card.
    pub payment_method_update: bool,
    /// See past invoices.
    pub invoice_history: bool,
    /// Where the portal's back link goes.
    pub default_return_url: Option<String>,
    /// Metadata.
    pub metadata: Metadata,
}

impl PortalConfigurationParams {
    fn form(&self) -> Form {
        let mut f = Form::new();
        f.set(
            "features[subscription_cancel][enabled]",
            self.cancel_at_period_end,
        );
        if self.cancel_at_period_end {
            f.set("features[subscription_cancel][mode]", "at_period_end");
        }
        let update = !self.switch_prices.is_empty();
        f.set("features[subscription_update][enabled]", update);
        if update {
            f.set(
                "features[subscription_update][default_allowed_updates][]",
                "price",
            )
            .set(
                "features[subscription_update][proration_behavior]",
                &self.proration_behavior,
            );
            for (i, (product, prices)) in self.switch_prices.iter().enumerate() {
                f.set(
                    format!("features[subscription_update][products][{i}][product]"),
                    product,
                );
                f.list(
                    &format!("features[subscription_update][products][{i}][prices]"),
                    prices,
                );
            }
        }
        f.set(
            "features[payment_method_update][enabled]",
            self.payment_method_update,
        )
        .set("features[invoice_history][enabled]", self.invoice_history)
        .opt("default_return_url", self.default_return_url.as_ref())
        .map("metadata", &self.metadata);
        f
    }
}

impl Client {
    /// `POST /v1/products`.
    pub async fn create_product(
        &self,
        p: &NewProduct,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Product>, Error> {
        let mut f = Form::new();
        f.opt("id", p.id.as_ref())
            .set("name", &p.name)
            .map("metadata", &p.metadata);
        Ok(self
            .post::<wire::Product>("/v1/products", &f, key)
            .await?
            .map(Product::from))
    }

    /// `POST /v1/products/{id}`.
    pub async fn update_product(
        &self,
        id: &str,
        p: &ProductUpdate,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Product>, Error> {
        let mut f = Form::new();
        f.opt("name", p.name.as_ref())
            .opt("active", p.active)
            .map("metadata", &p.metadata);
        let path = format!("/v1/products/{}", seg(id));
        Ok(self
            .post::<wire::Product>(&path, &f, key)
            .await?
            .map(Product::from))
    }

    /// `GET /v1/products/{id}`; None when it does not exist.
    pub async fn product(&self, id: &str) -> Result<Option<Stripe<Product>>, Error> {
        let path = format!("/v1/products/{}", seg(id));
        let r = found(self.get::<wire::Product>(&path, &Form::new()).await)?;
        Ok(r.map(|r| r.map(Product::from)))
    }

    /// Prices holding any of `lookup_keys` (`GET /v1/prices?lookup_keys[]=…`), asked ten at a
    /// time as Stripe allows.
    pub async fn prices_by_lookup_keys(&self, lookup_keys: &[String]) -> Result<Vec<Price>, Error> {
        let mut out = Vec::new();
        for chunk in lookup_keys.chunks(10) {
            let mut q = Form::new();
            q.list("lookup_keys", chunk).set("limit", 100);
            let r = self
                .get::<wire::List<wire::Price>>("/v1/prices", &q)
                .await?;
            out.extend(r.value.data.into_iter().map(Price::from));
        }
        Ok(out)
    }

    /// Every price of a product (`GET /v1/prices?product=…`), optionally only active ones.
    pub async fn prices_of_product(
        &self,
        product: &str,
        active: Option<bool>,
    ) -> Result<Vec<Price>, Error> {
        let mut out: Vec<Price> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("product", product)
                .opt("active", active)
                .set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page: Page<Price> = self
                .get::<wire::List<wire::Price>>("/v1/prices", &q)
                .await?
                .value
                .into_page(Price::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/prices`.
    pub async fn create_price(
        &self,
        p: &NewPrice,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Price>, Error> {
        let mut f = Form::new();
        f.set("product", &p.product)
            .set("currency", &p.currency)
            .set("unit_amount", p.unit_amount);
        if let Some(r) = p.recurring {
            f.set("recurring[interval]", r.interval.as_str())
                .set("recurring[interval_count]", r.interval_count);
        }
        f.opt("lookup_key", p.lookup_key.as_ref());
        if p.transfer_lookup_key {
            f.set("transfer_lookup_key", true);
        }
        f.map("metadata", &p.metadata);
        Ok(self
            .post::<wire::Price>("/v1/prices", &f, key)
            .await?
            .map(Price::from))
    }

    /// Activates or archives a price (`POST /v1/prices/{id}` with `active`).
    pub async fn set_price_active(
        &self,
        id: &str,
        active: bool,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Price>, Error> {
        let mut f = Form::new();
        f.set("active", active);
        let path = format!("/v1/prices/{}", seg(id));
        Ok(self
            .post::<wire::Price>(&path, &f, key)
            .await?
            .map(Price::from))
    }

    /// `POST /v1/coupons`.
    pub async fn create_coupon(
        &self,
        c: &NewCoupon,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Coupon>, Error> {
        let mut f = Form::new();
        f.opt("id", c.id.as_ref()).set("name", &c.name);
        match &c.discount {
            CouponDiscount::Percent(p) => {
                f.set("percent_off", p.normalize());
            }
            CouponDiscount::Amount { amount, currency } => {
                f.set("amount_off", amount).set("currency", currency);
            }
        }
        match c.duration {
            CouponDuration::Once => f.set("duration", "once"),
            CouponDuration::Forever => f.set("duration", "forever"),
            CouponDuration::Repeating { months } => f
                .set("duration", "repeating")
                .set("duration_in_months", months),
        };
        f.opt("max_redemptions", c.max_redemptions)
            .opt("redeem_by", c.redeem_by)
            .list("applies_to[products]", &c.applies_to_products)
            .map("metadata", &c.metadata);
        let r = self.post::<wire::Coupon>("/v1/coupons", &f, key).await?;
        try_map(r, Coupon::try_from)
    }

    /// `GET /v1/coupons/{id}`; None when it does not exist.
    pub async fn coupon(&self, id: &str) -> Result<Option<Stripe<Coupon>>, Error> {
        let path = format!("/v1/coupons/{}", seg(id));
        match found(self.get::<wire::Coupon>(&path, &Form::new()).await)? {
            Some(r) => Ok(Some(try_map(r, Coupon::try_from)?)),
            None => Ok(None),
        }
    }

    /// Renames a coupon or sets its metadata (the only mutable fields).
    pub async fn update_coupon(
        &self,
        id: &str,
        name: &str,
        metadata: &Metadata,
        key: &IdempotencyKey,
    ) -> Result<Stripe<Coupon>, Error> {
        let mut f = Form::new();
        f.set("name", name).map("metadata", metadata);
        let path = format!("/v1/coupons/{}", seg(id));
        try_map(
            self.post::<wire::Coupon>(&path, &f, key).await?,
            Coupon::try_from,
        )
    }

    /// `POST /v1/promotion_codes`.
    pub async fn create_promotion_code(
        &self,
        p: &NewPromotionCode,
        key: &IdempotencyKey,
    ) -> Result<Stripe<PromotionCode>, Error> {
        let mut f = Form::new();
        f.set("promotion[type]", "coupon")
            .set("promotion[coupon]", &p.coupon)
            .set("code", &p.code)
            .map("metadata", &p.metadata);
        let r = self
            .post::<wire::PromotionCode>("/v1/promotion_codes", &f, key)
            .await?;
        Ok(r.map(PromotionCode::from))
    }

    /// Promotion codes with this exact code (`GET /v1/promotion_codes?code=…`).
    pub async fn promotion_codes_by_code(&self, code: &str) -> Result<Vec<PromotionCode>, Error> {
        let mut q = Form::new();
        q.set("code", code).set("limit", 100);
        let r = self
            .get::<wire::List<wire::PromotionCode>>("/v1/promotion_codes", &q)
            .await?;
        Ok(r.value.data.into_iter().map(PromotionCode::from).collect())
    }

    /// Every Customer Portal configuration (`GET /v1/billing_portal/configurations`).
    pub async fn portal_configurations(&self) -> Result<Vec<PortalConfiguration>, Error> {
        let mut out: Vec<PortalConfiguration> = Vec::new();
        loop {
            let mut q = Form::new();
            q.set("limit", 100);
            if let Some(last) = out.last() {
                q.set("starting_after", &last.id);
            }
            let page = self
                .get::<wire::List<wire::PortalConfiguration>>(
                    "/v1/billing_portal/configurations",
                    &q,
                )
                .await?
                .value
                .into_page(PortalConfiguration::from);
            let more = page.has_more && !page.data.is_empty();
            out.extend(page.data);
            if !more {
                return Ok(out);
            }
        }
    }

    /// `POST /v1/billing_portal/configurations`.
    pub async fn create_portal_configuration(
        &self,
        p: &PortalConfigurationParams,
        key: &IdempotencyKey,
    ) -> Result<Stripe<PortalConfiguration>, Error> {
        let r = self
            .post::<wire::PortalConfiguration>("/v1/billing_portal/configurations", &p.form(), key)
            .await?;
        Ok(r.map(PortalConfiguration::from))
    }

    /// `POST /v1/billing_portal/configurations/{id}`.
    pub async fn update_portal_configuration(
        &self,
        id: &str,
        p: &PortalConfigurationParams,
        key: &IdempotencyKey,
    ) -> Result<Stripe<PortalConfiguration>, Error> {
        let path = format!("/v1/billing_portal/configurations/{}", seg(id));
        let r = self
            .post::<wire::PortalConfiguration>(&path, &p.form(), key)
            .await?;
        Ok(r.map(PortalConfiguration::from))
    }
}
