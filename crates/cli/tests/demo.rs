//! `tally demo` as a user runs it: started as a child process with no flags, its three printed
//! addresses answer, the seeded data is there, and SIGINT stops it cleanly (exit 0).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

/// The text after `prefix` on the line that has it.
fn after<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.find(prefix).map(|i| l[i + prefix.len()..].trim()))
        .unwrap_or_else(|| panic!("no {prefix:?} in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_three_links_and_stops_on_sigint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("demo")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops everything"))
    {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("tally demo printed no links within 60 s: {lines:#?}");
            }
        }
    }
    let admin = after(&lines, "Admin console (one-time sign-in, 15 minutes): ").to_owned();
    let page = after(
        &lines,
        "Billing page of the customer Initech (one-time link): ",
    )
    .to_owned();
    let key = after(&lines, "API key: ").to_owned();
    let curl = after(&lines, "curl -s ").to_owned();
    let api = curl.split_whitespace().next().unwrap().to_owned();
    assert!(
        curl.contains(&format!("Authorization: Bearer {key}")),
        "{curl}"
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The admin link signs in once: a session cookie, then the dashboard answers 200.
    let r = http.get(&admin).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/admin/dashboard");
    let cookie = r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let base = admin.split("/admin/").next().unwrap().to_owned();
    let r = http
        .get(format!("{base}/admin/dashboard"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains("<svg class=\"chart\""), "{body}");
    let r = http.get(&admin).send().await.unwrap();
    assert_eq!(
        r.headers()[LOCATION],
        "/admin/sign-in",
        "the link works once"
    );

    // The billing-page link opens Initech's page, with its plan cards and Upgrade.
    let r = http.get(&page).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let r = http.get(format!("{base}{to}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains("id=\"plan-name\">Free</span>"), "{body}");
    assert!(
        body.contains("id=\"choose-pro\">Upgrade</button>"),
        "{body}"
    );

    // The API key and the curl line: the seeded business, with a past-due account.
    let r = http.get(&api).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m: Value = r.json().await.unwrap();
    let usd = &m["currencies"][0];
    assert_eq!(usd["currency"], "usd", "{m}");
    assert_eq!(usd["failed_payments"]["count"], 1, "{m}");
    assert_eq!(usd["failing_invoices"][0]["customer"], "umbrella", "{m}");
    assert!(usd["committed_mrr"].as_i64().unwrap() > 0, "{m}");
    let r = http
        .get(format!("{base}/v1/customers/northwind/invoices"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let inv: Value = r.json().await.unwrap();
    assert!(inv["data"].as_array().unwrap().len() >= 2, "{inv}");

    // Ctrl-C: exits 0 within a few seconds.
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
    let stop = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(10),
            "tally demo did not stop within 10 s of SIGINT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "{code:?}");
    assert!(
        stop.elapsed() < Duration::from_secs(5),
        "{:?}",
        stop.elapsed()
    );
}
