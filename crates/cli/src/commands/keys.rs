//! `tally keys`: API keys, stored hashed.

use std::process::ExitCode;

use clap::Subcommand;

use super::common::{runtime, DatabaseArgs};
use crate::table::Table;

/// API key commands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an admin API key. The secret is printed once and stored only as its SHA-256.
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "default")]
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a key by id.
    Revoke {
        /// Key id, e.g. key_0123abcd.
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

pub fn run(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            KeysCommand::Create { name, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let (key, secret) = tally_server::service::keys::create(&*store, &name).await?;
                store.close().await;
                eprintln!(
                    "created {} ({}); the secret is shown only now:",
                    key.id, key.name
                );
                println!("{secret}");
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::List { db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let keys = store.list_api_keys().await?;
                store.close().await;
                let mut t = Table::new(&["ID", "NAME", "ROLE", "CREATED", "REVOKED"]);
                for k in keys {
                    t.row(vec![
                        k.id,
                        k.name,
                        k.role,
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default(),
                    ]);
                }
                print!("{}", t.render());
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Revoke { id, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let done = store.revoke_api_key(&id, chrono::Utc::now()).await?;
                store.close().await;
                if done {
                    println!("revoked {id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no active key {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}
