//! Options shared by the commands that open the database or load the catalog.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tally_core::catalog::Catalog;
use tally_server::config::{parse_catalog, EXAMPLE_CATALOG};

/// Where the data lives.
#[derive(clap::Args, Clone)]
pub struct DatabaseArgs {
    /// Database URL: sqlite://PATH (the default, one file; add ?synchronous=full to also survive
    /// power loss) or postgres://USER@HOST/DB.
    #[arg(long, env = "TALLY_DATABASE_URL", default_value = "sqlite://tally.db")]
    pub database_url: String,
}

/// Which catalog to use.
#[derive(clap::Args, Clone)]
pub struct CatalogArgs {
    /// Catalog file (TOML). Without it, the built-in Magic Box example catalog.
    #[arg(long, env = "TALLY_CATALOG")]
    pub catalog: Option<PathBuf>,
}

impl CatalogArgs {
    /// Loads and validates the catalog, every error located.
    pub fn load(&self) -> anyhow::Result<Arc<Catalog>> {
        let catalog = match &self.catalog {
            Some(path) => {
                let src = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the catalog {}", path.display()))?;
                parse_catalog(&src, &path.display().to_string())?
            }
            None => parse_catalog(EXAMPLE_CATALOG, "catalogs/magicbox.toml (built in)")?,
        };
        Ok(Arc::new(catalog))
    }
}

/// A runtime for the commands that talk to the database.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
