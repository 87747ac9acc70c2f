//! Tally's gateway to Stripe.
//!
//! A small typed client of our own over the endpoints Tally uses (the generated `async-stripe`
//! crate is ~425k lines and slows every clean build; it serves only as a test-time oracle), webhook
//! signature verification, the typed parse of webhook events into domain events, and the catalog
//! push. Stripe's wire types stay inside this crate: callers see the small domain structs of
//! [`model`] and [`event`].

pub mod client;
pub mod error;
pub mod event;
pub mod form;
pub mod idempotency;
pub mod model;
pub mod observe;
pub mod push;
pub mod push_meters;
pub mod resources;
pub mod webhook;
mod wire;

pub use client::{Client, Config, Meta, RetryPolicy, Stripe};
pub use error::{Error, ErrorKind};
pub use idempotency::IdempotencyKey;
pub use observe::{Observer, RequestRecord};

/// The Stripe API version Tally speaks, sent as `Stripe-Version` on every request. Changing it is a
/// deliberate migration: the shapes in [`wire`] follow it.
pub const API_VERSION: &str = "2025-08-27.basil";

/// Stripe's production API base; `STRIPE_API_BASE` points the client elsewhere (the simulator).
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
pub use resources::billing::{
    CheckoutDiscount, CheckoutMode, EventFilter, InvoicePreview, ItemChange, NewCheckoutSession,
    RawEvent, SubscriptionUpdate,
};
pub use resources::catalog::{
    NewCoupon, NewPrice, NewProduct, NewPromotionCode, PortalConfigurationParams, ProductUpdate,
};
pub use resources::customers::CustomerParams;
pub use resources::invoicing::{InvoiceFilter, NewInvoice, NewInvoiceItem};
pub use resources::meters::{
    Meter, MeterEventOutcome, NewMeter, NewMeterEvent, NewMeteredPrice, PriceTier,
};
pub use resources::payment_intents::NewOffSessionPayment;
pub use resources::refunds::NewRefund;
pub use resources::test_clocks::TestClock;
