//! What the handlers call: one function per operation, business rules here, SQL in the store.

pub mod closer;
pub mod customers;
pub mod events;
pub mod keys;
pub mod usage;
