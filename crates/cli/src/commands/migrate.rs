//! `tally migrate`: applies pending database migrations (also done by `tally serve` at start).

use std::process::ExitCode;

use super::common::{runtime, DatabaseArgs};

/// Arguments of `tally migrate`.
#[derive(clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    db: DatabaseArgs,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&args.db.database_url).await?;
        let version = match store.backend() {
            tally_store::Backend::Sqlite => tally_store::sqlite::SCHEMA_VERSION,
            tally_store::Backend::Postgres => tally_store::postgres::SCHEMA_VERSION,
        };
        store.close().await;
        println!(
            "{} database is at schema version {version}",
            store.backend().name()
        );
        Ok(ExitCode::SUCCESS)
    })
}
