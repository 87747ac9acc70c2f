//! One module per command group.

pub mod audit;
pub mod bench;
pub mod bench_close;
pub mod bench_credits;
mod bench_load;
pub mod bench_notify;
pub mod bench_pages;
pub mod bench_postgres;
mod bench_restart;
pub mod bench_webhooks;
pub mod catalog;
pub mod clock;
pub mod common;
pub mod demo;
pub mod events;
pub mod invoice;
pub mod keys;
pub mod migrate;
pub mod notify;
pub mod reconcile;
pub mod serve;
pub mod stripe;
pub mod sync;
pub mod topups;
pub mod usage;
pub mod webhooks;

use std::path::Path;

use anyhow::Context;
use tally_core::catalog::{Catalog, CatalogErrors};

/// Why a catalog could not be loaded.
pub enum LoadError {
    /// The file could not be read.
    Io(anyhow::Error),
    /// The file has errors, each with its location.
    Invalid(CatalogErrors),
}

/// Reads and validates a catalog file.
pub fn load_catalog(path: &Path) -> Result<Catalog, LoadError> {
    let src = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(LoadError::Io)?;
    Catalog::parse(&src, &path.display().to_string()).map_err(LoadError::Invalid)
}

/// Loads a catalog for a command that needs a valid one: prints every error and fails otherwise.
pub fn require_catalog(path: &Path) -> anyhow::Result<Catalog> {
    match load_catalog(path) {
        Ok(c) => Ok(c),
        Err(LoadError::Io(e)) => Err(e),
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            anyhow::bail!("{} has {}", path.display(), count(errors.len(), "error"))
        }
    }
}

/// `1 plan`, `3 plans`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
