//! `tally webhooks`: the Stripe webhook inbox — list, replay, backfill after an outage.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tally_store::InboxFilter;

use super::common::{runtime, DatabaseArgs};
use crate::table::Table;

/// `tally webhooks …`.
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Received Stripe events, newest first, with how processing ended.
    List(ListArgs),
    /// Process events again (one by id, or every one received since an instant). Applying is
    /// idempotent: nothing is applied twice. A running `tally serve` picks them up.
    Replay(ReplayArgs),
    /// Read Stripe's events created since an instant (`GET /v1/events`, every page) into the
    /// inbox, e.g. after an outage; events already received change nothing. Uses STRIPE_API_KEY
    /// and STRIPE_API_BASE; a running `tally serve` applies the new ones.
    Backfill(BackfillArgs),
}

#[derive(Args)]
pub struct ListArgs {
    /// Only parked events and events that failed at least once.
    #[arg(long)]
    failed: bool,
    /// At most this many events.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// The event id (`evt_…`).
    #[arg(conflicts_with = "since", required_unless_present = "since")]
    event_id: Option<String>,
    /// Every event received at or after this RFC 3339 instant.
    #[arg(long)]
    since: Option<String>,
    #[command(flatten)]
    db: DatabaseArgs,
}

#[derive(Args)]
pub struct BackfillArgs {
    /// Events created at or after this RFC 3339 instant.
    #[arg(long)]
    since: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

fn instant(flag: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{flag} {s:?} is not an RFC 3339 instant"))
}

pub fn run(cmd: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhooksCommand::List(a) => list(a),
        WebhooksCommand::Replay(a) => replay(a),
        WebhooksCommand::Backfill(a) => backfill(a),
    }
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&args.db.database_url).await?;
        let rows = store
            .inbox_list(InboxFilter {
                failed: args.failed,
                since: None,
                limit: args.limit,
            })
            .await;
        store.close().await;
        let rows = rows?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(ExitCode::SUCCESS);
        }
        let mut t = Table::new(&["EVENT", "TYPE", "RECEIVED", "STATUS", "ATTEMPTS", "OUTCOME"]);
        for e in rows {
            t.row(vec![
                e.event_id,
                e.event_type,
                e.received_at.to_rfc3339(),
                e.status,
                e.attempts.to_string(),
                e.last_error.or(e.outcome).unwrap_or_default(),
            ]);
        }
        print!("{}", t.render());
        Ok(ExitCode::SUCCESS)
    })
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| instant("--since", s))
        .transpose()?;
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&args.db.database_url).await?;
        let now = tally_store::clock::Clock::system().now();
        let n = store
            .inbox_replay(args.event_id.as_deref(), since, now)
            .await;
        store.close().await;
        let n = n?;
        if n == 0 {
            if let Some(id) = &args.event_id {
                anyhow::bail!("no event {id:?} in the inbox");
            }
        }
        println!("{n} event(s) to process again");
        Ok(ExitCode::SUCCESS)
    })
}

fn backfill(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let since = instant("--since", &args.since)?;
    let cfg = tally_stripe::Config::from_env().map_err(anyhow::Error::msg)?;
    let client = tally_stripe::Client::new(cfg).context("cannot build the Stripe client")?;
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&args.db.database_url).await?;
        let now = tally_store::clock::Clock::system().now();
        let report =
            tally_server::service::stripe_events::backfill_into(&*store, &client, since, now).await;
        store.close().await;
        let report = report.map_err(anyhow::Error::msg)?;
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!(
                "read {} event(s) from Stripe; {} were new and are queued",
                report.read, report.stored
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
