//! `tally sync`: send one month's usage to Stripe, for a cron job.

use std::process::ExitCode;

use clap::Args;
use tally_core::money::Currency;
use tally_server::service::usage_sync::{self, SyncReport};
use tally_server::{AppState, Config};

use super::common::{runtime, CatalogArgs, DatabaseArgs};
use crate::table::{Align, Table};

/// Exit status when the arguments or the configuration are wrong.
const USAGE_ERROR: u8 = 2;

/// Arguments of `tally sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// The month whose allowance periods (those starting in it) are synced, as YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    period: String,
    /// Only this customer.
    #[arg(long)]
    customer: Option<String>,
    /// Send to Stripe (closing due periods first). Without it, a dry run: nothing is written
    /// and Stripe is not called.
    #[arg(long)]
    commit: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
}

fn money(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => format!(
            "{} {}",
            c.code().to_ascii_uppercase(),
            c.format_minor(minor)
        ),
        Err(_) => format!("{minor} {currency}"),
    }
}

/// Runs the sync. Exit status: 0 when every invoice is on Stripe (or a dry run), 1 when some
/// push failed or is still pending, 2 for wrong arguments or configuration.
pub fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
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
    if args.commit && config.stripe.api_key.is_none() {
        eprintln!("error: --commit needs STRIPE_API_KEY");
        return Ok(ExitCode::from(USAGE_ERROR));
    }
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&config.database_url).await?;
        let state = AppState::new(config, store.clone());
        let report =
            usage_sync::sync(&state, &args.period, args.customer.as_deref(), args.commit).await;
        store.close().await;
        let report = report.map_err(|e| anyhow::anyhow!(e.message))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        Ok(if report.failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

fn print_report(r: &SyncReport) {
    println!(
        "{} — {}",
        r.period,
        if r.dry_run {
            "DRY RUN (nothing sent; add --commit)"
        } else {
            "COMMIT"
        }
    );
    let mut t = Table::new(&[
        "CUSTOMER",
        "INVOICE",
        "LINE",
        "DESCRIPTION",
        "AMOUNT",
        "STATE",
    ])
    .align(4, Align::Right);
    for i in &r.invoices {
        for l in &i.lines {
            t.row(vec![
                i.customer.clone(),
                i.invoice.clone(),
                l.line_id.clone(),
                l.description.clone(),
                money(l.amount, &i.currency),
                i.state.clone(),
            ]);
        }
        t.row(vec![
            i.customer.clone(),
            i.invoice.clone(),
            "total".into(),
            i.stripe_invoice
                .clone()
                .map(|s| format!("on Stripe invoice {s}"))
                .unwrap_or_default(),
            money(i.amount, &i.currency),
            i.state.clone(),
        ]);
    }
    print!("{}", t.render());
    for i in r.invoices.iter().filter(|i| i.error.is_some()) {
        println!(
            "{} {}: {} (request {})",
            i.customer,
            i.invoice,
            i.error.as_deref().unwrap_or(""),
            i.request_id.as_deref().unwrap_or("-")
        );
    }
    for t in &r.totals {
        println!(
            "Total {}: {} invoice(s), {}",
            t.currency.to_ascii_uppercase(),
            t.invoices,
            money(t.amount, &t.currency)
        );
    }
    if r.failed > 0 {
        println!("{} invoice(s) not on Stripe yet", r.failed);
    }
}
