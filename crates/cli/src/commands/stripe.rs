//! `tally stripe push --catalog FILE [--commit] [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tally_stripe::push::{push, Change, Report};
use tally_stripe::{Client, Config};

use super::common::runtime;
use super::require_catalog;

/// Stripe commands.
#[derive(Subcommand)]
pub enum StripeCommand {
    /// Make Stripe's products, prices, coupons, promotion codes and Customer Portal configuration
    /// match a catalog. A dry run unless `--commit`. Uses STRIPE_API_KEY and STRIPE_API_BASE.
    Push(PushArgs),
}

/// Arguments of `tally stripe push`.
#[derive(Args)]
pub struct PushArgs {
    /// The catalog file (TOML).
    #[arg(long)]
    pub catalog: PathBuf,
    /// Make the changes (without it, only print them).
    #[arg(long)]
    pub commit: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a Stripe command.
pub fn run(cmd: StripeCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StripeCommand::Push(args) => run_push(args),
    }
}

fn run_push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let catalog = require_catalog(&args.catalog)?;
    let cfg = Config::from_env().map_err(anyhow::Error::msg)?;
    let client = Client::new(cfg).context("cannot build the Stripe client")?;
    // One instant for the whole push.
    let now = tally_store::clock::Clock::system().now().timestamp();
    let outcome = runtime()?.block_on(push(&client, &catalog, args.commit, now));
    let (report, failure) = match outcome {
        Ok(r) => (r, None),
        Err(e) => {
            let msg = format!("{e}");
            (e.report, Some(msg))
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(f) = &failure {
            v["error"] = serde_json::Value::String(f.clone());
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&report));
        if let Some(f) = &failure {
            eprintln!("error: {f}");
            eprintln!("What was done is kept; run the push again to finish.");
        }
    }
    Ok(if failure.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn describe(c: &Change) -> String {
    match c {
        Change::CreateProduct { id, name } => format!("create product {id} ({name})"),
        Change::UpdateProduct { id, fields } => {
            format!("update product {id} ({})", fields.join(", "))
        }
        Change::CreatePrice {
            lookup_key,
            amount,
            currency,
            interval,
            id,
            replaces,
        } => {
            let mut s = format!(
                "create price {lookup_key}: {amount} {currency} minor units {}",
                interval
                    .as_deref()
                    .map(|i| format!("per {i}"))
                    .unwrap_or_else(|| "once".into())
            );
            if let Some(id) = id {
                s.push_str(&format!(" as {id}"));
            }
            if let Some(r) = replaces {
                s.push_str(&format!(", replacing {r}"));
            }
            s
        }
        Change::ReactivatePrice { id, lookup_key } => {
            format!("reactivate price {id} ({lookup_key})")
        }
        Change::ArchivePrice { id, lookup_key } => match lookup_key {
            Some(k) => format!("archive price {id} ({k})"),
            None => format!("archive price {id}"),
        },
        Change::CreateCoupon { id } => format!("create coupon {id}"),
        Change::UpdateCoupon { id } => format!("update coupon {id}"),
        Change::CreatePromotionCode { code, coupon } => {
            format!("create promotion code {code} for coupon {coupon}")
        }
        Change::CreatePortalConfiguration { id } => match id {
            Some(id) => format!("create Customer Portal configuration {id}"),
            None => "create Customer Portal configuration".into(),
        },
        Change::UpdatePortalConfiguration { id } => {
            format!("update Customer Portal configuration {id}")
        }
        Change::CreateMeter { event_name, id } => match id {
            Some(id) => format!("create meter {event_name} as {id}"),
            None => format!("create meter {event_name}"),
        },
        Change::CreateMeteredPrice {
            lookup_key,
            event_name,
            id,
            replaces,
        } => {
            let mut s = format!("create metered price {lookup_key} on meter {event_name}");
            if let Some(id) = id {
                s.push_str(&format!(" as {id}"));
            }
            if let Some(r) = replaces {
                s.push_str(&format!(", replacing {r}"));
            }
            s
        }
    }
}

fn render(r: &Report) -> String {
    let mut out = String::new();
    let verb = if r.committed { "" } else { "would " };
    for c in &r.changes {
        out.push_str(&format!("{verb}{}\n", describe(c)));
    }
    for w in &r.warnings {
        out.push_str(&format!("warning: {}: {}\n", w.object, w.message));
    }
    if r.changes.is_empty() {
        out.push_str(&format!(
            "Stripe matches the catalog ({} objects unchanged).\n",
            r.unchanged
        ));
    } else if r.committed {
        out.push_str(&format!(
            "{} changes made, {} objects unchanged.\n",
            r.changes.len(),
            r.unchanged
        ));
    } else {
        out.push_str(&format!(
            "{} changes to make, {} objects unchanged. Dry run: run again with --commit to apply.\n",
            r.changes.len(),
            r.unchanged
        ));
    }
    out
}
