//! `tally events import FILE`: bulk-loads usage events with the API's validation and dedup.
//!
//! Events go in batches of up to 1,000, each all-or-nothing like `POST /v1/events`. Events already
//! stored count as duplicates, so a rerun (after a failure, or of the same file) imports nothing
//! twice. The first invalid batch stops the import with every problem and its line number.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tally_server::{AppState, Config};

use super::common::{runtime, CatalogArgs, DatabaseArgs};

/// Event commands.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Import usage events from a JSON Lines or CSV file.
    ///
    /// JSON Lines: one event per line, as in POST /v1/events ({"id", "customer", "metric",
    /// "value", "timestamp", "properties"}). CSV: a header row naming the columns id, customer,
    /// metric, value, timestamp and optionally properties (a JSON object).
    Import(ImportArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

/// Arguments of `tally events import`.
#[derive(clap::Args)]
pub struct ImportArgs {
    /// The file to import.
    file: PathBuf,
    /// File format; by default from the extension (.csv is CSV, anything else JSON Lines).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Events per batch (1–1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch_size: u16,
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    catalog: CatalogArgs,
}

pub fn run(cmd: EventsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EventsCommand::Import(args) => import(args),
    }
}

/// Splits one CSV record (RFC 4180 quoting; records do not span lines).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Turns a CSV record into the JSON of an event.
fn csv_event(header: &[String], fields: Vec<String>) -> Result<String, String> {
    if fields.len() != header.len() {
        return Err(format!(
            "{} fields, the header has {}",
            fields.len(),
            header.len()
        ));
    }
    let mut obj = Map::new();
    for (name, v) in header.iter().zip(fields) {
        if v.is_empty() {
            continue;
        }
        let value = match name.as_str() {
            "properties" => {
                serde_json::from_str(&v).map_err(|e| format!("properties is not JSON: {e}"))?
            }
            _ => Value::String(v),
        };
        obj.insert(name.clone(), value);
    }
    Ok(Value::Object(obj).to_string())
}

struct Progress {
    total_bytes: u64,
    tty: bool,
    last: Instant,
}

impl Progress {
    fn show(&mut self, bytes: u64, stats: &Stats, done: bool) {
        if !self.tty || (!done && self.last.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.last = Instant::now();
        let pct = (bytes * 100)
            .checked_div(self.total_bytes)
            .unwrap_or(100)
            .min(100);
        let filled = (pct / 5) as usize;
        eprint!(
            "\r[{}{}] {pct:>3}%  {} events, {} new, {} duplicates",
            "#".repeat(filled),
            " ".repeat(20 - filled.min(20)),
            stats.read,
            stats.accepted,
            stats.duplicates
        );
        if done {
            eprintln!();
        }
        let _ = std::io::stderr().flush();
    }
}

#[derive(Default)]
struct Stats {
    read: u64,
    accepted: u64,
    duplicates: u64,
}

fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let format = args.format.unwrap_or(
        if args
            .file
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            Format::Csv
        } else {
            Format::Jsonl
        },
    );
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut config = Config::new(args.db.database_url.clone())?;
    config.catalog = args.catalog.load()?;
    runtime()?.block_on(async move {
        let store = tally_store::connect(&config.database_url).await?;
        let state = AppState::new(config, store.clone());
        let mut progress = Progress {
            total_bytes,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now() - Duration::from_secs(1),
        };
        let mut stats = Stats::default();
        let mut bytes = 0u64;
        let mut header: Option<Vec<String>> = None;
        let mut batch: Vec<(usize, String)> = Vec::with_capacity(args.batch_size as usize);
        let mut lines = BufReader::new(file).lines();
        let mut line_no = 0usize;
        loop {
            let line = lines.next().transpose().context("cannot read the file")?;
            if let Some(line) = &line {
                line_no += 1;
                bytes += line.len() as u64 + 1;
                if !line.trim().is_empty() {
                    let event = match format {
                        Format::Jsonl => Ok(line.clone()),
                        Format::Csv => match &header {
                            None => {
                                let h = csv_fields(line).map_err(|e| anyhow::anyhow!("line {line_no}: {e}"))?;
                                header = Some(h.into_iter().map(|s| s.trim().to_owned()).collect());
                                continue;
                            }
                            Some(h) => csv_fields(line).and_then(|f| csv_event(h, f)),
                        },
                    };
                    match event {
                        Ok(json) => batch.push((line_no, json)),
                        Err(e) => bail!("line {line_no}: {e}; stopped after {} new events", stats.accepted),
                    }
                }
            }
            if batch.len() == args.batch_size as usize || (line.is_none() && !batch.is_empty()) {
                let mut raws = Vec::with_capacity(batch.len());
                for (n, json) in &batch {
                    match RawValue::from_string(json.clone()) {
                        Ok(r) => raws.push(r),
                        Err(e) => bail!("line {n}: not JSON: {e}; stopped after {} new events", stats.accepted),
                    }
                }
                let refs: Vec<&RawValue> = raws.iter().map(|r| &**r).collect();
                match tally_server::service::events::ingest(&state, &refs).await {
                    Ok(out) => {
                        stats.read += batch.len() as u64;
                        stats.accepted += out.accepted;
                        stats.duplicates += out.duplicates;
                    }
                    Err(e) => {
                        progress.show(bytes, &stats, true);
                        eprintln!("error: {}", e.message);
                        for item in &e.invalid {
                            eprintln!("  line {}: {} ({})", batch[item.index].0, item.message, item.code);
                        }
                        eprintln!(
                            "stopped: {} new events stored before this batch; fix the file and rerun (stored events count as duplicates)",
                            stats.accepted
                        );
                        store.close().await;
                        return Ok(ExitCode::FAILURE);
                    }
                }
                batch.clear();
                progress.show(bytes, &stats, false);
            }
            if line.is_none() {
                break;
            }
        }
        progress.show(bytes, &stats, true);
        store.close().await;
        println!(
            "imported {} events: {} new, {} duplicates",
            stats.read, stats.accepted, stats.duplicates
        );
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records() {
        assert_eq!(
            csv_fields("a,\"b,c\",\"d\"\"e\",").unwrap(),
            vec!["a", "b,c", "d\"e", ""]
        );
        assert!(csv_fields("\"open").is_err());
        let h: Vec<String> = ["id", "customer", "value", "properties"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let json = csv_event(&h, csv_fields("e1,c1,2.50,\"{\"\"k\"\": 1}\"").unwrap()).unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": "e1", "customer": "c1", "value": "2.50", "properties": {"k": 1}})
        );
    }
}
