//! `tally keys`: API keys, stored hashed, each with a scope and optionally one customer.

use std::process::ExitCode;

use clap::Subcommand;
use tally_server::service::keys::{self, Scope};
use tally_store::AuditContext;

use super::common::{runtime, DatabaseArgs};
use crate::table::Table;

/// The audit log's actor of operator commands.
pub const CLI_ACTOR: &str = "cli";

/// The audit context of a change made by an operator command now.
pub fn cli_audit() -> AuditContext {
    AuditContext {
        actor: CLI_ACTOR.into(),
        idempotency_key: None,
        at: tally_store::clock::Clock::system().now(),
    }
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("{s:?} is not a scope: use admin, app or read"))
}

/// API key commands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create an API key. The secret is printed once and stored only as its SHA-256.
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "default")]
        name: String,
        /// admin (everything), app (an app's backend: events, entitlement checks, credit
        /// consumption, customer upserts, reads) or read (GET only).
        #[arg(long, default_value = "admin", value_parser = parse_scope)]
        scope: Scope,
        /// Limit the key to this customer (app and read keys only).
        #[arg(long)]
        customer: Option<String>,
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
            KeysCommand::Create {
                name,
                scope,
                customer,
                db,
            } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let audit = cli_audit();
                let created = keys::create(
                    &*store,
                    &name,
                    scope,
                    customer.as_deref(),
                    Some(audit.clone()),
                    audit.at,
                )
                .await;
                store.close().await;
                let (key, secret) = created?;
                eprintln!(
                    "created {} ({}, scope {}{}); the secret is shown only now:",
                    key.id,
                    key.name,
                    key.scope,
                    key.customer_id
                        .as_deref()
                        .map(|c| format!(", customer {c}"))
                        .unwrap_or_default()
                );
                println!("{secret}");
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::List { db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let keys = store.list_api_keys().await?;
                store.close().await;
                let mut t = Table::new(&["ID", "NAME", "SCOPE", "CUSTOMER", "CREATED", "REVOKED"]);
                for k in keys {
                    t.row(vec![
                        k.id,
                        k.name,
                        k.scope,
                        k.customer_id.unwrap_or_default(),
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default(),
                    ]);
                }
                print!("{}", t.render());
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Revoke { id, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let audit = cli_audit();
                let done = store
                    .revoke_api_key_audited(&id, audit.at, Some(audit))
                    .await?;
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
