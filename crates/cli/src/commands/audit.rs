//! `tally audit`: the audit log of every mutation made by an operator or an API key.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tally_store::AuditFilter;

use super::common::{runtime, DatabaseArgs};
use crate::table::Table;

/// Arguments of `tally audit`.
#[derive(Args)]
pub struct AuditArgs {
    /// Only rows about this customer.
    #[arg(long)]
    customer: Option<String>,
    /// Only rows made by this key id (`env_…` for TALLY_API_KEY, `cli` for operator commands).
    #[arg(long)]
    actor: Option<String>,
    /// Only rows at or after this RFC 3339 instant.
    #[arg(long)]
    since: Option<String>,
    /// At most this many rows, newest first.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the rows as JSON (the shape of `GET /v1/audit`'s `data`).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let since = args
        .since
        .as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .with_context(|| format!("--since {s:?} is not an RFC 3339 instant"))
        })
        .transpose()?;
    runtime()?.block_on(async move {
        let store = tally_store::connect_admin(&args.db.database_url).await?;
        let page = store
            .audit_log(AuditFilter {
                customer_id: args.customer,
                actor: args.actor,
                since,
                before_seq: None,
                limit: args.limit,
            })
            .await;
        store.close().await;
        let page = page?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&page.records)?);
            return Ok(ExitCode::SUCCESS);
        }
        let mut t = Table::new(&["ID", "AT", "ACTOR", "ACTION", "TARGET", "CUSTOMER"]);
        for r in page.records {
            t.row(vec![
                r.id,
                r.at.to_rfc3339(),
                r.actor.unwrap_or_default(),
                r.action,
                format!("{} {}", r.target.kind, r.target.id.unwrap_or_default()),
                r.customer_id.unwrap_or_default(),
            ]);
        }
        print!("{}", t.render());
        Ok(ExitCode::SUCCESS)
    })
}
