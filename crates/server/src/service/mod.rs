//! What the handlers call: one function per operation, business rules here, SQL in the store.

pub mod admin;
pub mod audit;
pub mod checkout;
pub mod closer;
pub mod credits;
pub mod customers;
pub mod entitlements;
pub mod events;
pub mod flags;
pub mod keys;
pub mod notify;
pub mod pages;
pub mod plan_change;
pub mod reconcile;
pub mod refunds;
pub mod rfc3339;
pub mod stripe_customers;
pub mod stripe_events;
pub mod usage;
pub mod usage_push;
pub mod usage_sync;
pub mod worker;
