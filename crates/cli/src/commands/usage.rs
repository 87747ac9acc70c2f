//! `tally usage summary`: a customer's usage in one allowance period.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use chrono::{Datelike, TimeZone, Utc};
use clap::Subcommand;
use tally_core::period::Period;
use tally_server::service::usage;
use tally_server::{AppState, Config};

use super::common::{runtime, CatalogArgs, DatabaseArgs};
use crate::table::{Align, Table};

/// Usage commands.
#[derive(Subcommand)]
pub enum UsageCommand {
    /// Show a customer's usage per metric in one allowance period.
    Summary(SummaryArgs),
}

/// Arguments of `tally usage summary`.
#[derive(clap::Args)]
pub struct SummaryArgs {
    /// Customer id.
    #[arg(long)]
    customer: String,
    /// The allowance period that starts in this month (YYYY-MM); by default the current one.
    #[arg(long, value_name = "YYYY-MM")]
    period: Option<String>,
    /// Print JSON (the shape of GET /v1/customers/{id}/usage).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
}

pub fn run(cmd: UsageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UsageCommand::Summary(args) => summary(args),
    }
}

/// The allowance period (anchored on `anchor`) that starts in the month `ym`.
fn period_starting_in(
    anchor: tally_core::period::AllowanceAnchor,
    ym: &str,
) -> anyhow::Result<Period> {
    let bad = || anyhow!("--period {ym:?} must be YYYY-MM");
    let (y, m) = ym.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let first = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .ok_or_else(bad)?;
    let mut p = anchor.period(first);
    if p.start < first {
        p = anchor.period(p.end);
    }
    if p.start.month() != m || p.start.year() != y {
        bail!("no allowance period starts in {ym}");
    }
    Ok(p)
}

fn summary(args: SummaryArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::new(args.db.database_url.clone())?;
    config.catalog = args.catalog.load()?;
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&config.database_url).await?;
        let state = AppState::new(config, store.clone());
        let customer = usage::customer(&state, &args.customer)
            .await
            .map_err(|e| anyhow!(e.message))?;
        let period = match &args.period {
            Some(ym) => period_starting_in(customer.allowance(), ym)?,
            None => customer.allowance_period(state.clock.now()),
        };
        let sub = store.get_subscription(&customer.id).await?;
        let billed = usage::billed_plan(&state.catalog, sub.as_ref());
        let u = usage::period_usage(&state, &customer, period)
            .await
            .map_err(|e| anyhow!(e.message))?;
        let report = usage::report(&state.catalog, &customer, billed.as_ref(), period, &u);
        store.close().await;
        let report = report.map_err(|e| anyhow!(e.message))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{} on {} — {} to {}",
            report.customer,
            report.plan.as_deref().unwrap_or("no plan"),
            period.start.format("%Y-%m-%d %H:%M"),
            period.end.format("%Y-%m-%d %H:%M UTC")
        );
        let mut t = Table::new(&["METRIC", "USED", "INCLUDED", "LIMIT", "PERCENT", "OVERAGE"])
            .align(1, Align::Right)
            .align(2, Align::Right)
            .align(3, Align::Right)
            .align(4, Align::Right)
            .align(5, Align::Right);
        for m in &report.metrics {
            t.row(vec![
                m.metric.clone(),
                format!("{} {}", m.used, m.unit),
                m.included.clone(),
                m.limit.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                m.percent
                    .map(|p| format!("{p}%"))
                    .unwrap_or_else(|| "-".into()),
                m.overage.to_string(),
            ]);
        }
        print!("{}", t.render());
        if !u.late.is_empty() {
            println!("late usage of earlier periods billed in this one:");
            for r in &u.late {
                println!(
                    "  {} from the period starting {}: {}",
                    r.metric,
                    r.usage_period_start.format("%Y-%m-%d"),
                    r.sum
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_starting_in_a_month() {
        let anchor = tally_core::period::AllowanceAnchor::fixed(
            Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap(),
        );
        let p = period_starting_in(anchor, "2026-02").unwrap();
        assert_eq!(
            p.start,
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        assert_eq!(p.end, Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap());
        assert!(period_starting_in(anchor, "2026-13").is_err());
        assert!(period_starting_in(anchor, "soon").is_err());
    }
}
