//! `tally invoice preview`: rates one usage period against a plan.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Subcommand, ValueEnum};
use rust_decimal::Decimal;
use tally_core::decimal;
use tally_core::period::Interval;
use tally_core::rating::{rate, Invoice, LineKind, RatingInput};

use super::catalog::money;
use super::require_catalog;
use crate::table::{Align, Table};

/// Invoice commands.
#[derive(Subcommand)]
pub enum InvoiceCommand {
    /// Rate one usage period of a plan and print the invoice.
    ///
    /// Usage lines appear for every metric of the plan that has an overage charge, with the
    /// billable quantity (usage beyond the included quantity). A coupon is previewed as in the
    /// first month after redeeming it; whether it can still be redeemed is checked when a
    /// customer redeems it.
    Preview(PreviewArgs),
}

/// Arguments of `tally invoice preview`.
#[derive(clap::Args)]
pub struct PreviewArgs {
    /// The catalog file (TOML).
    #[arg(long)]
    catalog: PathBuf,
    /// Plan id.
    #[arg(long)]
    plan: String,
    /// Billing interval whose base price is billed.
    #[arg(long, value_enum, default_value_t = IntervalArg::Month)]
    interval: IntervalArg,
    /// Usage in the period, as METRIC=QUANTITY (repeatable). Pass-through metrics take a money
    /// amount in major units, e.g. api_spend=180.00.
    #[arg(long = "usage", value_name = "METRIC=QTY", value_parser = parse_usage)]
    usage: Vec<(String, Decimal)>,
    /// Coupon id to apply.
    #[arg(long)]
    coupon: Option<String>,
    /// Leave out the base price, as for the eleven monthly periods of an annual plan that do not
    /// start its year.
    #[arg(long)]
    without_base: bool,
    /// Print the invoice as JSON: amounts in minor units, quantities as decimal strings.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum IntervalArg {
    Month,
    Year,
}

impl From<IntervalArg> for Interval {
    fn from(i: IntervalArg) -> Interval {
        match i {
            IntervalArg::Month => Interval::Month,
            IntervalArg::Year => Interval::Year,
        }
    }
}

fn parse_usage(s: &str) -> Result<(String, Decimal), String> {
    let (metric, qty) = s
        .split_once('=')
        .ok_or_else(|| format!("expected METRIC=QUANTITY, got \"{s}\""))?;
    let metric = metric.trim();
    if metric.is_empty() {
        return Err(format!("expected METRIC=QUANTITY, got \"{s}\""));
    }
    // Tally's one decimal grammar and the limits of a period's usage total.
    let value = decimal::parse(qty, &decimal::USAGE_TOTAL).map_err(|e| format!("\"{qty}\" {e}"))?;
    Ok((metric.to_string(), value))
}

/// Runs an invoice command.
pub fn run(cmd: InvoiceCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        InvoiceCommand::Preview(args) => preview(args),
    }
}

fn preview(args: PreviewArgs) -> anyhow::Result<ExitCode> {
    let catalog = require_catalog(&args.catalog)?;
    let plan = catalog.plan(&args.plan).ok_or_else(|| {
        let ids: Vec<&str> = catalog.plans().iter().map(|p| p.id.as_str()).collect();
        anyhow!(
            "no plan \"{}\" in {} (plans: {})",
            args.plan,
            args.catalog.display(),
            ids.join(", ")
        )
    })?;
    let mut usage = BTreeMap::new();
    for (metric_id, qty) in args.usage {
        let Some(metric) = catalog.metric(&metric_id) else {
            let ids: Vec<&str> = catalog.metrics().iter().map(|m| m.id.as_str()).collect();
            bail!(
                "no metric \"{metric_id}\" in {} (metrics: {})",
                args.catalog.display(),
                ids.join(", ")
            );
        };
        if qty.is_sign_negative() && !qty.is_zero() && !metric.allow_negative {
            bail!("usage of {metric_id} must not be negative ({qty})");
        }
        if usage.insert(metric_id.clone(), qty).is_some() {
            bail!("--usage {metric_id} is given more than once");
        }
    }
    let coupon = match &args.coupon {
        None => None,
        Some(id) => Some(
            catalog
                .coupon(id)
                .ok_or_else(|| anyhow!("no coupon \"{id}\" in {}", args.catalog.display()))?,
        ),
    };
    let invoice = rate(&RatingInput {
        plan,
        interval: args.interval.into(),
        usage: &usage,
        coupon,
        include_base: !args.without_base,
        adjustments: &[],
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&invoice)?);
    } else {
        print!("{}", render(&invoice, &plan.name));
    }
    Ok(ExitCode::SUCCESS)
}

fn kind(k: LineKind) -> &'static str {
    match k {
        LineKind::Base => "base",
        LineKind::Usage => "usage",
        LineKind::Minimum => "minimum",
        LineKind::Proration => "proration",
        LineKind::Adjustment => "adjustment",
    }
}

/// The text form of an invoice.
fn render(invoice: &Invoice, plan_name: &str) -> String {
    let c = invoice.currency;
    let mut out = format!(
        "{plan_name} ({}), {}, {}\n\n",
        invoice.plan,
        invoice.interval.adjective(),
        c.code().to_ascii_uppercase()
    );
    let mut t = Table::new(&["KIND", "DESCRIPTION", "QUANTITY", "AMOUNT"])
        .align(2, Align::Right)
        .align(3, Align::Right);
    for line in &invoice.lines {
        t.row(vec![
            kind(line.kind).to_string(),
            line.description.clone(),
            line.quantity.to_string(),
            c.format_minor(line.amount),
        ]);
    }
    t.row(vec![String::new(); 4]);
    for (label, amount) in [
        ("subtotal", invoice.subtotal),
        ("discount", -invoice.discount),
        ("total", invoice.total),
    ] {
        t.row(vec![
            label.to_string(),
            String::new(),
            String::new(),
            money(amount, c),
        ]);
    }
    out.push_str(&t.render());
    out
}
