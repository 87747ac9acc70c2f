//! `tally reconcile`: compare one month of Tally with Stripe.

use std::process::ExitCode;

use clap::Args;
use tally_server::service::reconcile::{self, ReconcileReport};
use tally_server::service::usage_sync;
use tally_server::{AppState, Config};

use super::common::{runtime, CatalogArgs, DatabaseArgs};
use crate::table::{Align, Table};

/// Exit status when the arguments or the configuration are wrong.
const USAGE_ERROR: u8 = 2;

/// Arguments of `tally reconcile`.
#[derive(Args)]
pub struct ReconcileArgs {
    /// The month compared, as YYYY-MM: the invoices of the periods starting in it, and Stripe's
    /// invoices created in it.
    #[arg(long, value_name = "YYYY-MM")]
    period: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
}

/// Runs the comparison. Exit status: 0 when Tally and Stripe agree, 1 when any discrepancy is
/// found, 2 for wrong arguments or configuration.
pub fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    if usage_sync::month(&args.period).is_none() {
        eprintln!("error: --period {:?} must be YYYY-MM", args.period);
        return Ok(ExitCode::from(USAGE_ERROR));
    }
    let mut config = match Config::new(args.db.database_url.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(USAGE_ERROR));
        }
    };
    config.catalog = args.catalog.load()?;
    config.stripe.api_key = std::env::var("STRIPE_API_KEY").ok();
    config.stripe.api_base = std::env::var("STRIPE_API_BASE").ok();
    if config.stripe.api_key.is_none() {
        eprintln!("error: reconcile needs STRIPE_API_KEY");
        return Ok(ExitCode::from(USAGE_ERROR));
    }
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&config.database_url).await?;
        let state = AppState::new(config, store.clone());
        let report = reconcile::reconcile(&state, &args.period).await;
        store.close().await;
        let report = report.map_err(|e| anyhow::anyhow!(e.message))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        Ok(if report.discrepancies.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn print_report(r: &ReconcileReport) {
    println!(
        "{}: {} invoice(s), {} Stripe invoice(s), {} subscription(s) compared",
        r.period, r.invoices_checked, r.payments_checked, r.subscriptions_checked
    );
    if r.discrepancies.is_empty() {
        println!("Tally and Stripe agree.");
    } else {
        let mut t = Table::new(&[
            "KIND",
            "CUSTOMER",
            "TALLY",
            "LINE",
            "STRIPE",
            "TALLY HAS",
            "STRIPE HAS",
        ]);
        for x in &r.discrepancies {
            let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            t.row(vec![
                x.kind.clone(),
                x.customer.clone(),
                o(&x.tally_id),
                o(&x.line),
                o(&x.stripe_id),
                o(&x.tally),
                o(&x.stripe),
            ]);
        }
        print!("{}", t.render());
        println!("{} discrepancy(ies)", r.discrepancies.len());
    }
    let mut t = Table::new(&[
        "CURRENCY",
        "INVOICED",
        "COLLECTED",
        "REFUNDED",
        "OUTSTANDING",
    ])
    .align(1, Align::Right)
    .align(2, Align::Right)
    .align(3, Align::Right)
    .align(4, Align::Right);
    for v in &r.revenue {
        t.row(vec![
            v.currency.to_ascii_uppercase(),
            v.invoiced.to_string(),
            v.collected.to_string(),
            v.refunded.to_string(),
            v.outstanding.to_string(),
        ]);
    }
    println!("Revenue (minor units):");
    print!("{}", t.render());
}
