//! `tally`: the command-line entry point of Tally, a self-hosted usage-based billing engine.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod table;

/// Tally: self-hosted usage-based billing with Stripe as payment processor.
#[derive(Parser)]
#[command(name = "tally", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on loopback with no Stripe account: the Stripe simulator, Tally, a demo
    /// catalog and customers; prints the admin console, a billing page and an API key.
    Demo(commands::demo::DemoArgs),
    /// Check or show a catalog file.
    #[command(subcommand)]
    Catalog(commands::catalog::CatalogCommand),
    /// Rate usage against a plan.
    #[command(subcommand)]
    Invoice(commands::invoice::InvoiceCommand),
    /// Run the HTTP API.
    Serve(Box<commands::serve::ServeArgs>),
    /// Apply pending database migrations.
    Migrate(commands::migrate::MigrateArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Manage outgoing webhook endpoints.
    #[command(subcommand, name = "webhook-endpoints")]
    WebhookEndpoints(commands::notify::EndpointsCommand),
    /// List or replay notifications (the outbox of outgoing webhooks).
    #[command(subcommand)]
    Notifications(commands::notify::NotificationsCommand),
    /// A customer's automatic top-ups: set, show, off.
    #[command(subcommand)]
    Topups(commands::topups::TopupsCommand),
    /// Show the audit log (every change made by an operator or an API key), newest first.
    Audit(commands::audit::AuditArgs),
    /// Import usage events.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// Show usage.
    #[command(subcommand)]
    Usage(commands::usage::UsageCommand),
    /// Push a catalog to Stripe.
    #[command(subcommand)]
    Stripe(commands::stripe::StripeCommand),
    /// The Stripe webhook inbox: list, replay, backfill.
    #[command(subcommand)]
    Webhooks(commands::webhooks::WebhooksCommand),
    /// Move a running server's clock and its Stripe test clocks (development and tests).
    #[command(subcommand)]
    Clock(commands::clock::ClockCommand),
    /// Send one month's usage to Stripe (dry run by default; --commit sends). Exit status 0
    /// when everything is on Stripe, 1 when some invoice is not, 2 for wrong arguments.
    Sync(commands::sync::SyncArgs),
    /// Compare one month of Tally with Stripe: invoices and their usage lines, payments,
    /// subscriptions, and the month's revenue. Exit status 1 when they differ, 2 for wrong
    /// arguments.
    Reconcile(commands::reconcile::ReconcileArgs),
    /// Measure ingestion throughput, latency and memory beside the raw SQLite limit.
    Bench(commands::bench::BenchArgs),
}

/// mimalloc instead of the C library's allocator: the server allocates per request on one
/// thread and frees some of it on another (the store's writer), where glibc's allocator spent
/// about a fifth of the request threads' time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(args),
        Command::Catalog(cmd) => commands::catalog::run(cmd),
        Command::Invoice(cmd) => commands::invoice::run(cmd),
        Command::Serve(args) => commands::serve::run(*args),
        Command::Migrate(args) => commands::migrate::run(args),
        Command::Keys(cmd) => commands::keys::run(cmd),
        Command::Audit(args) => commands::audit::run(args),
        Command::Topups(cmd) => commands::topups::run(cmd),
        Command::WebhookEndpoints(cmd) => commands::notify::run_endpoints(cmd),
        Command::Notifications(cmd) => commands::notify::run_notifications(cmd),
        Command::Events(cmd) => commands::events::run(cmd),
        Command::Usage(cmd) => commands::usage::run(cmd),
        Command::Bench(args) => commands::bench::run(args),
        Command::Stripe(cmd) => commands::stripe::run(cmd),
        Command::Webhooks(cmd) => commands::webhooks::run(cmd),
        Command::Clock(cmd) => commands::clock::run(cmd),
        Command::Sync(args) => commands::sync::run(args),
        Command::Reconcile(args) => commands::reconcile::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
