//! Catalog push (see push.rs).
