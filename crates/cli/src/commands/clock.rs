//! `tally clock advance --by 1M`: asks a running `tally serve` (started with `--movable-clock`
//! or `--stripe-test-clocks`) to move its clock and its customers' Stripe test clocks forward,
//! and prints the new time once both have settled.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::common::runtime;

/// Moving time (development and tests).
#[derive(Subcommand)]
pub enum ClockCommand {
    /// Move the server's clock (and its Stripe test clocks) forward and wait until renewals,
    /// webhooks and period closes have played out.
    Advance(AdvanceArgs),
}

/// Arguments of `tally clock advance`.
#[derive(Args)]
pub struct AdvanceArgs {
    /// How far: a number and a unit — s, m (minutes), h, d, w, M (calendar months), y — e.g.
    /// 1M, 7d, 36h.
    #[arg(long)]
    pub by: String,
    /// The server's address.
    #[arg(long, env = "TALLY_URL", default_value = "http://127.0.0.1:8585")]
    pub url: String,
    /// An admin API key (the server's TALLY_API_KEY, or one made with `tally keys create`).
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a clock command.
pub fn run(cmd: ClockCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClockCommand::Advance(args) => runtime()?.block_on(advance(args)),
    }
}

async fn advance(args: AdvanceArgs) -> anyhow::Result<ExitCode> {
    let http = reqwest::Client::builder()
        // Settling waits for Stripe's clocks and the webhooks they cause.
        .timeout(Duration::from_secs(600))
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("{}/v1/clock/advance", args.url.trim_end_matches('/'));
    let r = http
        .post(&url)
        .bearer_auth(&args.api_key)
        .json(&serde_json::json!({"by": args.by}))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("no message");
        let code = body["error"]["code"].as_str().unwrap_or("error");
        eprintln!("{status} {code}: {msg}");
        return Ok(ExitCode::FAILURE);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        println!(
            "now {} ({} Stripe test clocks, {} events, {} invoices closed)",
            body["now"].as_str().unwrap_or("?"),
            body["stripe_test_clocks"],
            body["events"],
            body["invoices_closed"]
        );
    }
    Ok(ExitCode::SUCCESS)
}
