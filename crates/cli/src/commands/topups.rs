//! `tally topups`: a customer's automatic top-up settings, on the server's database. A running
//! server reads changed settings within a second and charges through Stripe; these commands never
//! call Stripe themselves.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;
use tally_server::service::topups::{self, AutoTopupInput};

use super::common::{runtime, CatalogArgs, DatabaseArgs};
use super::keys::cli_audit;
use crate::table::Table;

/// Automatic top-up commands.
#[derive(Subcommand)]
pub enum TopupsCommand {
    /// Turn automatic top-ups on, or change them: below THRESHOLD credits after a consumption,
    /// buy PACK with the customer's saved card, at most MAX times per calendar month (UTC).
    Set {
        customer: String,
        /// Credits (a decimal).
        #[arg(long)]
        threshold: String,
        /// The catalog's credit pack.
        #[arg(long)]
        pack: String,
        #[arg(long)]
        max_per_month: i64,
        #[command(flatten)]
        catalog: CatalogArgs,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Show a customer's settings, their state and the latest top-ups.
    Show {
        customer: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Turn automatic top-ups off (a top-up in flight still finishes).
    Off {
        customer: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn now() -> chrono::DateTime<chrono::Utc> {
    tally_store::clock::Clock::system().now()
}

pub fn run(cmd: TopupsCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            TopupsCommand::Set {
                customer,
                threshold,
                pack,
                max_per_month,
                catalog,
                db,
            } => {
                let catalog = catalog.load()?;
                let store = tally_store::connect_admin(&db.database_url).await?;
                let known = store.get_customer(&customer).await;
                let done = match known {
                    Ok(Some(_)) => {
                        let input = AutoTopupInput {
                            threshold: Value::String(threshold),
                            pack,
                            max_per_month,
                        };
                        topups::store_settings(
                            store.as_ref(),
                            &catalog,
                            &customer,
                            input,
                            cli_audit(),
                            now(),
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message))
                    }
                    Ok(None) => Err(anyhow::anyhow!("no customer {customer}")),
                    Err(e) => Err(e.into()),
                };
                store.close().await;
                let (s, _) = done?;
                println!(
                    "{}: below {} credits buy {}, at most {} a month",
                    s.customer_id,
                    s.threshold.normalize(),
                    s.pack,
                    s.max_per_month
                );
                Ok(ExitCode::SUCCESS)
            }
            TopupsCommand::Show { customer, json, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let settings = store.get_auto_topup(&customer).await;
                let rows = store.topups_of_customer(&customer, 20).await;
                store.close().await;
                let Some(s) = settings? else {
                    eprintln!("{customer} has no automatic top-ups");
                    return Ok(ExitCode::FAILURE);
                };
                let rows = rows?;
                if json {
                    let v = serde_json::json!({"settings": s, "recent": rows});
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(ExitCode::SUCCESS);
                }
                println!(
                    "{}: below {} credits buy {}, at most {} a month; declines in a row: {}{}",
                    s.customer_id,
                    s.threshold.normalize(),
                    s.pack,
                    s.max_per_month,
                    s.consecutive_failures,
                    if s.breaker_open() {
                        " (stopped until the card changes)"
                    } else {
                        ""
                    }
                );
                let mut t = Table::new(&["ID", "STATUS", "AMOUNT", "DECLINE", "CREATED"]);
                for r in rows {
                    t.row(vec![
                        r.id,
                        r.state,
                        format!("{} {}", r.amount, r.currency),
                        r.decline_code.unwrap_or_default(),
                        r.created_at.to_rfc3339(),
                    ]);
                }
                print!("{}", t.render());
                Ok(ExitCode::SUCCESS)
            }
            TopupsCommand::Off { customer, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let done = topups::remove_settings(store.as_ref(), &customer, cli_audit()).await;
                store.close().await;
                match done {
                    Ok(()) => {
                        println!("automatic top-ups of {customer} are off");
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        eprintln!("{}", e.message);
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
        }
    })
}
