//! Handlers, one module per Stripe resource. Each takes the locked simulator and the parsed
//! parameters and returns the response object.

pub mod catalog;
pub mod checkout;
pub mod clocks;
pub mod customers;
pub mod discounts;
pub mod endpoints;
pub mod invoices;
pub mod meters;
pub mod payments;
pub mod portal;
pub mod schedules;
pub mod subscriptions;

/// Sorts objects newest first (by `created`, then creation order) for list endpoints.
pub fn newest_first<T: Clone>(mut v: Vec<(i64, u64, String, T)>) -> Vec<(String, T)> {
    v.sort_by_key(|x| std::cmp::Reverse((x.0, x.1)));
    v.into_iter().map(|(_, _, id, t)| (id, t)).collect()
}
