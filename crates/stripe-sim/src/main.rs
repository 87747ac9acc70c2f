//! `stripe-sim --port 12111 [--host 127.0.0.1] [--state-file PATH]`

use std::path::PathBuf;

const HELP: &str = "stripe-sim: a local simulator of the Stripe API parts Tally uses

USAGE:
    stripe-sim [--port PORT] [--host HOST] [--state-file PATH] [--public-url URL]
               [--webhook-url URL [--webhook-secret whsec_...]] [--after-retries X]

OPTIONS:
    --port PORT          Port to listen on (default 12111; 0 picks a free port)
    --host HOST          Address to bind (default 127.0.0.1, loopback only)
    --state-file PATH    Load state from PATH at start and save it there on every change
    --public-url URL     Base URL for checkout/portal links (default http://HOST:PORT)
    --webhook-url URL    Register a webhook endpoint for every event type at start
    --webhook-secret S   Its signing secret (whsec_...; random if not given)
    --after-retries X    Subscription status after the last failed retry: cancel | unpaid | past_due
    -h, --help           Print this help

Any `sk_test_...` key is accepted as `Authorization: Bearer sk_test_...`.";

fn main() {
    let mut cfg = stripe_sim::Config::default();
    let mut args = std::env::args().skip(1);
    let mut webhook_url = None;
    let mut webhook_secret = None;
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("error: {name} needs a value\n\n{HELP}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return;
            }
            "--port" => {
                let v = val("--port");
                cfg.port = v.parse().unwrap_or_else(|_| {
                    eprintln!("error: --port must be a number, got `{v}`");
                    std::process::exit(2)
                });
            }
            "--host" => cfg.host = val("--host"),
            "--state-file" => cfg.state_file = Some(PathBuf::from(val("--state-file"))),
            "--public-url" => cfg.public_url = Some(val("--public-url")),
            "--webhook-url" => webhook_url = Some(val("--webhook-url")),
            "--webhook-secret" => webhook_secret = Some(val("--webhook-secret")),
            "--after-retries" => {
                cfg.after_retries = match val("--after-retries").as_str() {
                    "cancel" => stripe_sim::AfterRetries::Cancel,
                    "unpaid" => stripe_sim::AfterRetries::Unpaid,
                    "past_due" => stripe_sim::AfterRetries::PastDue,
                    other => {
                        eprintln!("error: --after-retries must be cancel, unpaid or past_due, got `{other}`");
                        std::process::exit(2)
                    }
                }
            }
            other => {
                eprintln!("error: unknown argument `{other}`\n\n{HELP}");
                std::process::exit(2)
            }
        }
    }
    match (webhook_url, webhook_secret) {
        (Some(u), Some(s)) if s.starts_with("whsec_") => cfg.webhook = Some((u, s)),
        (Some(u), None) => {
            cfg.webhook = Some((u, format!("whsec_{}", stripe_sim::util::random_chars(32))))
        }
        (None, None) => {}
        _ => {
            eprintln!("error: --webhook-secret needs --webhook-url and must start with whsec_");
            std::process::exit(2)
        }
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    };
    rt.block_on(async move {
        let h = match stripe_sim::spawn(cfg).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot start: {e}");
                std::process::exit(1)
            }
        };
        println!("stripe-sim listening on {}", h.base_url());
        if let Some((url, secret)) = h.with(|s| s.cfg.webhook.clone()).flatten() {
            println!("webhook endpoint {url} signing secret {secret}");
        }
        let _ = tokio::signal::ctrl_c().await;
        h.shutdown().await;
    });
}
