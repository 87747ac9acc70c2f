//! Tally's billing domain: money and currencies, billing periods, the catalog, rating (usage →
//! invoice lines), coupons and proration, the prepaid-credit ledger's rules, entitlement decisions
//! and feature flag evaluation.
//!
//! Pure code: no I/O, no async, no SQL, no HTTP. Amounts are integer minor units; quantities and
//! rates are [`rust_decimal::Decimal`]s; nothing here uses floating point.

#![warn(missing_docs)]

pub mod business;
pub mod catalog;
pub mod coupon;
pub mod credits;
pub mod decimal;
pub mod entitlement;
pub mod flags;
pub mod money;
pub mod money_display;
pub mod period;
pub mod rating;
