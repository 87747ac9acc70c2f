//! Customer emails through the real server and a local SMTP server started by the test: every
//! emailed notification type reaches the customer exactly once, rendered from the templates (an
//! operator's file replacing a built-in one); opted-out customers, customers without an address
//! and the 95 % threshold get nothing; an SMTP server that is down is retried until it is back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_server::service::email::EmailConfig;
use tally_server::service::notify;
use tally_store::clock::Clock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[macro_use]
mod common;

use common::{app_on, App, Db};

const CATALOG: &str = include_str!("fixtures/notify.toml");

/// One message the SMTP server accepted.
#[derive(Debug, Clone)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

impl Mail {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }

    fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

/// A minimal SMTP server (RFC 5321's commands as lettre sends them, no TLS, no auth).
#[derive(Clone, Default)]
struct Smtp {
    got: Arc<Mutex<Vec<Mail>>>,
}

impl Smtp {
    async fn spawn_on(listener: TcpListener) -> Smtp {
        let s = Smtp::default();
        let got = s.got.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let got = got.clone();
                tokio::spawn(async move {
                    let _ = session(sock, got).await;
                });
            }
        });
        s
    }

    async fn spawn() -> (Smtp, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (Smtp::spawn_on(l).await, addr)
    }

    fn got(&self) -> Vec<Mail> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Mail> {
        for _ in 0..400 {
            if self.got().len() >= n {
                return self.got();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {n} emails; got {:#?}", self.got());
    }
}

async fn session(sock: tokio::net::TcpStream, got: Arc<Mutex<Vec<Mail>>>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"220 test.local ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            w.write_all(b"250-test.local\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_owned();
            to.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_owned());
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
                data.push_str("\r\n");
            }
            got.lock().unwrap().push(Mail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            w.write_all(b"250 2.0.0 queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"250 OK\r\n").await?;
        }
    }
    Ok(())
}

async fn app(db: Db, smtp: SocketAddr, templates: Option<std::path::PathBuf>) -> Option<App> {
    app_on(db, |c| {
        c.catalog = Arc::new(parse_catalog(CATALOG, "fixtures/notify.toml").unwrap());
        c.clock = Clock::starting_at(Utc::now());
        c.email = EmailConfig {
            smtp_url: Some(format!("smtp://{smtp}")),
            from: Some("Example Billing <billing@example.com>".into()),
            templates_dir: templates,
        };
    })
    .await
}

/// Waits until the email channel's deliveries are all done (none pending).
async fn settled(app: &App, n: usize) {
    let state = app.server.state().clone();
    for _ in 0..400 {
        let d = state.store.webhook_deliveries("email", 1000).await.unwrap();
        if d.len() == n && d.iter().all(|d| d.status == "succeeded") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "email deliveries not settled: {:#?}",
        state.store.webhook_deliveries("email", 1000).await
    );
}

fn metric(text: &str, series: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or("absent")
        .to_owned()
}

on_both_backends!(
    each_email_is_sent_once_and_opt_out_is_honoured,
    a_down_smtp_server_is_retried_until_it_is_back,
);

async fn each_email_is_sent_once_and_opt_out_is_honoured(db: Db) {
    let (smtp, addr) = Smtp::spawn().await;
    // The operator replaces the credits.low template; the others stay built in.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credits.low.txt"),
        "Subject: Only {{ data.balance }} credits left, {{ customer.name }}\n\nTop up at https://app.example.com/billing.\n",
    )
    .unwrap();
    let Some(app) = app(db, addr, Some(dir.path().to_owned())).await else {
        return;
    };
    let state = app.server.state().clone();
    for (id, body) in [
        ("c1", json!({"email": "ada@example.com", "name": "Ada"})),
        (
            "c2",
            json!({"email": "bob@example.com", "email_opt_out": true}),
        ),
        ("c3", json!({"name": "No Address"})),
    ] {
        let (s, b) = app.put(&format!("/v1/customers/{id}"), body).await;
        assert!(s.is_success(), "{b}");
    }
    let (_, b) = app.get("/v1/customers/c2").await;
    assert_eq!(b["email_opt_out"], true);
    let (_, b) = app.get("/v1/customers/c1").await;
    assert_eq!(b["email_opt_out"], false);
    // The email channel is not one of the app's webhook endpoints.
    let (s, b) = app.get("/v1/webhook-endpoints").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["data"], json!([]), "{b}");

    let usage = |t: u32| {
        json!({"customer": "c1", "metric": "builds", "period_start": "2026-12-01T00:00:00Z",
               "threshold": t, "used": t.to_string(), "limit": "100"})
    };
    let notes: Vec<(&str, &str, Value)> = vec![
        (
            "subscription.trial_will_end",
            "c1",
            // The catalog's plan `free` is named "Free"; an unknown plan shows its id.
            json!({"customer": "c1", "subscription": "sub_1", "plan": "free", "interval": "month",
                   "trial_end": "2026-12-20T00:00:00+00:00"}),
        ),
        (
            "invoice.payment_failed",
            "c1",
            json!({"customer": "c1", "transaction": "txn_1", "amount": 1250, "currency": "usd",
                   "past_due_since": "2026-12-02T00:00:00+00:00"}),
        ),
        (
            "subscription.canceled",
            "c1",
            json!({"customer": "c1", "subscription": "sub_1", "plan": "pro", "interval": "month",
                   "canceled_at": "2026-12-03T00:00:00Z"}),
        ),
        (
            "credits.low",
            "c1",
            json!({"customer": "c1", "balance": "15", "low_balance": "20"}),
        ),
        ("usage.threshold_reached", "c1", usage(80)),
        ("usage.threshold_reached", "c1", usage(95)),
        ("usage.threshold_reached", "c1", usage(100)),
        // Opted out, and without an address: nothing is sent.
        (
            "credits.low",
            "c2",
            json!({"customer": "c2", "balance": "1", "low_balance": "20"}),
        ),
        (
            "invoice.payment_failed",
            "c3",
            json!({"customer": "c3", "amount": 100, "currency": "usd"}),
        ),
        // Not a customer email at all: no email delivery row.
        (
            "credits.granted",
            "c1",
            json!({"customer": "c1", "amount": "5"}),
        ),
    ];
    for (i, (kind, customer, payload)) in notes.iter().enumerate() {
        assert!(notify::enqueue(
            &state,
            kind,
            Some(customer),
            payload.clone(),
            format!("test:{i}")
        )
        .await
        .unwrap());
    }
    // Ten notifications, nine of them of emailed types: nine email deliveries, six emails.
    settled(&app, 9).await;
    let mails = smtp.wait_for(6).await;
    // Several more delivery rounds: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mails_after = smtp.got();
    assert_eq!(mails_after.len(), 6, "{mails_after:#?}");
    let subjects: Vec<String> = mails.iter().map(|m| m.header("Subject").unwrap()).collect();
    assert_eq!(
        subjects,
        [
            "Your Free trial ends 2026-12-20",
            "Your payment of 12.50 USD failed",
            "Your subscription has been canceled",
            "Only 15 credits left, Ada",
            "You have used 80 % of your builds limit",
            "You have used 100 % of your builds limit",
        ]
    );
    for m in &mails {
        assert_eq!(m.from, "<billing@example.com>");
        assert_eq!(m.to, ["<ada@example.com>"]);
        assert_eq!(
            m.header("From").unwrap(),
            "\"Example Billing\" <billing@example.com>"
        );
        assert_eq!(m.header("To").unwrap(), "ada@example.com");
        assert!(m.header("Content-Type").unwrap().starts_with("text/plain"));
    }
    // The Message-ID is the notification's id: stable across a resend.
    assert_eq!(
        mails[0].header("Message-ID").unwrap(),
        format!("<{}@tally>", tally_store::notify::notification_id("test:0"))
    );
    assert!(mails[3]
        .body()
        .contains("Top up at https://app.example.com/billing."));
    assert!(mails[5].body().contains("You have reached your limit."));
    assert!(mails[1].body().contains("Hello Ada,"));

    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, "tally_email_deliveries_total{outcome=\"sent\"}"),
        "6"
    );
    // c2 opted out, c3 has no address, the 95 % threshold.
    assert_eq!(
        metric(&text, "tally_email_deliveries_total{outcome=\"skipped\"}"),
        "3"
    );
    assert_eq!(
        metric(&text, "tally_email_deliveries_total{outcome=\"failed\"}"),
        "0"
    );

    // Opted back in: the next one is sent.
    let (s, _) = app
        .put("/v1/customers/c2", json!({"email_opt_out": false}))
        .await;
    assert!(s.is_success());
    notify::enqueue(
        &state,
        "credits.low",
        Some("c2"),
        json!({"customer": "c2", "balance": "0", "low_balance": "20"}),
        "test:again".into(),
    )
    .await
    .unwrap();
    let mails = smtp.wait_for(7).await;
    assert_eq!(mails[6].to, ["<bob@example.com>"]);
    settled(&app, 10).await;
    assert_eq!(smtp.got().len(), 7);
    app.server.shutdown().await.unwrap();
}

async fn a_down_smtp_server_is_retried_until_it_is_back(db: Db) {
    // A port with nothing listening on it (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let Some(app) = app(db, addr, None).await else {
        return;
    };
    let state = app.server.state().clone();
    let (s, _) = app
        .put("/v1/customers/c1", json!({"email": "ada@example.com"}))
        .await;
    assert!(s.is_success());
    notify::enqueue(
        &state,
        "credits.low",
        Some("c1"),
        json!({"customer": "c1", "balance": "15", "low_balance": "20"}),
        "down:1".into(),
    )
    .await
    .unwrap();
    // The first attempt fails and is scheduled 30 s later.
    let mut failed = None;
    for _ in 0..200 {
        let d = state.store.webhook_deliveries("email", 10).await.unwrap();
        if d.first().is_some_and(|d| d.attempts >= 1) {
            failed = Some(d[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = state.store.webhook_deliveries("email", 10).await;
    let failed = failed.unwrap_or_else(|| panic!("no failed attempt: {seen:?}"));
    assert_eq!(failed.status, "pending");
    assert_eq!(failed.attempts, 1);
    assert!(
        failed.last_error.as_deref().unwrap().starts_with("SMTP:"),
        "{failed:?}"
    );
    let wait = failed.next_attempt_at.unwrap() - failed.last_attempt_at.unwrap();
    assert_eq!(wait.num_seconds(), 30);
    // The server comes back; once the retry is due, the email goes out, once.
    let smtp = Smtp::spawn_on(TcpListener::bind(addr).await.unwrap()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.got().len(), 0, "retried before it was due");
    state.clock.advance(chrono::Duration::seconds(31));
    let mails = smtp.wait_for(1).await;
    settled(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.got().len(), 1);
    assert_eq!(mails[0].to, ["<ada@example.com>"]);
    let d = state.store.webhook_deliveries("email", 10).await.unwrap();
    assert_eq!(d[0].attempts, 2);
    assert_eq!(d[0].last_status_code, Some(250));
    app.server.shutdown().await.unwrap();
}
