//! `tally webhook-endpoints` and `tally notifications`: outgoing webhooks from the command line,
//! on the server's database (a running server delivers what these enqueue or replay).

use std::process::ExitCode;

use clap::Subcommand;
use tally_server::service::notify::{self, EndpointInput};
use tally_store::NotificationFilter;

use super::common::{runtime, DatabaseArgs};
use super::keys::cli_audit;
use crate::table::Table;

/// Webhook endpoint commands.
#[derive(Subcommand)]
pub enum EndpointsCommand {
    /// Register an endpoint; its signing secret is printed once.
    Create {
        /// Where to POST events (http:// or https://).
        url: String,
        /// Event types to send, comma-separated, or * for all.
        #[arg(long, default_value = "*", value_delimiter = ',')]
        events: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List endpoints (never their secrets).
    List {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Delete an endpoint.
    Delete {
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Replace an endpoint's secret (printed once); the old one signs too for --expires-in seconds.
    Rotate {
        id: String,
        #[arg(long, default_value_t = notify::DEFAULT_ROTATION_GRACE)]
        expires_in: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Notification outbox commands.
#[derive(Subcommand)]
pub enum NotificationsCommand {
    /// List notifications, oldest first.
    List {
        #[arg(long)]
        customer: Option<String>,
        /// Only this event type.
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the rows as JSON lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Deliver a notification again (same event id) to every endpoint subscribed to its type.
    Replay {
        /// The event id, evt_….
        id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Stop sending a customer emails (trial ending, payment failed, …); --undo sends them again.
    EmailOptOut {
        customer: String,
        /// Opt the customer back in.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

fn now() -> chrono::DateTime<chrono::Utc> {
    tally_store::clock::Clock::system().now()
}

pub fn run_endpoints(cmd: EndpointsCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            EndpointsCommand::Create { url, events, db } => {
                let new = notify::new_endpoint(EndpointInput { url, events }, now())
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                let secret = new.secret.clone();
                let store = tally_store::connect_admin(&db.database_url).await?;
                let created = store
                    .create_webhook_endpoint_audited(new, Some(cli_audit()))
                    .await;
                store.close().await;
                let e = created?;
                eprintln!(
                    "created {} ({}, events {}); the secret is shown only now:",
                    e.id,
                    e.url,
                    e.events.join(",")
                );
                println!("{secret}");
                Ok(ExitCode::SUCCESS)
            }
            EndpointsCommand::List { db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let list = store.list_webhook_endpoints().await;
                store.close().await;
                let mut t = Table::new(&["ID", "URL", "EVENTS", "STATUS", "FAILING SINCE"]);
                for e in list? {
                    t.row(vec![
                        e.id,
                        e.url,
                        e.events.join(","),
                        e.status,
                        e.failing_since.map(|f| f.to_rfc3339()).unwrap_or_default(),
                    ]);
                }
                print!("{}", t.render());
                Ok(ExitCode::SUCCESS)
            }
            EndpointsCommand::Delete { id, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let done = store
                    .delete_webhook_endpoint_audited(&id, now(), Some(cli_audit()))
                    .await;
                store.close().await;
                if done? {
                    println!("deleted {id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no webhook endpoint {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
            EndpointsCommand::Rotate { id, expires_in, db } => {
                let until = notify::rotation_grace_end(Some(expires_in), now())
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                let secret = notify::new_secret();
                let store = tally_store::connect_admin(&db.database_url).await?;
                let done = store
                    .rotate_webhook_endpoint_secret_audited(&id, &secret, until, Some(cli_audit()))
                    .await;
                store.close().await;
                if done?.is_some() {
                    eprintln!(
                        "rotated {id}; the previous secret signs too until {}; the new one is shown only now:",
                        until.to_rfc3339()
                    );
                    println!("{secret}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no webhook endpoint {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}

pub fn run_notifications(cmd: NotificationsCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            NotificationsCommand::List {
                customer,
                kind,
                limit,
                json,
                db,
            } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let list = store
                    .list_notifications(NotificationFilter {
                        customer_id: customer,
                        kind,
                        after_seq: None,
                        limit,
                    })
                    .await;
                store.close().await;
                let list = list?;
                if json {
                    for n in list {
                        println!("{}", serde_json::to_string(&n)?);
                    }
                } else {
                    let mut t = Table::new(&["ID", "TYPE", "CUSTOMER", "CREATED"]);
                    for n in list {
                        t.row(vec![
                            n.id,
                            n.kind,
                            n.customer_id.unwrap_or_default(),
                            n.created_at.to_rfc3339(),
                        ]);
                    }
                    print!("{}", t.render());
                }
                Ok(ExitCode::SUCCESS)
            }
            NotificationsCommand::EmailOptOut { customer, undo, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let done = async {
                    if store.get_customer(&customer).await?.is_none() {
                        return Ok::<_, tally_store::StoreError>(false);
                    }
                    store
                        .upsert_customer_audited(
                            tally_store::CustomerUpsert {
                                id: customer.clone(),
                                email: None,
                                name: None,
                                metadata: None,
                                email_opt_out: Some(!undo),
                                now: now(),
                            },
                            Some(cli_audit()),
                        )
                        .await?;
                    Ok(true)
                }
                .await;
                store.close().await;
                if done? {
                    if undo {
                        println!("{customer} receives customer emails again");
                    } else {
                        println!("{customer} opted out of customer emails");
                    }
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no customer {customer}");
                    Ok(ExitCode::FAILURE)
                }
            }
            NotificationsCommand::Replay { id, db } => {
                let store = tally_store::connect_admin(&db.database_url).await?;
                let done = store.replay_notification(&id, now()).await;
                store.close().await;
                match done? {
                    Some(n) => {
                        println!("{id}: {n} deliveries pending");
                        Ok(ExitCode::SUCCESS)
                    }
                    None => {
                        eprintln!("no notification {id}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
        }
    })
}
