//! What the handlers call: one function per operation, business rules here, SQL in the store.

pub mod admin;
pub mod audit;
pub mod business;
pub mod checkout;
pub mod clock;
pub mod closer;
pub mod credits;
pub mod customers;
pub mod email;
pub mod entitlements;
pub mod events;
pub mod flags;
pub mod keys;
pub mod monitor;
pub mod notify;
pub mod pages;
pub mod plan_change;
pub mod rfc3339;
pub mod stripe_customers;
pub mod stripe_events;
pub mod stripe_schedule;
pub mod usage;
pub mod worker;
