//! What goes over the wire, seen by a scripted HTTP server: the pinned `Stripe-Version`, the key,
//! the idempotency key, bracketed form bodies, and `Stripe-Should-Retry: true` on a status that is
//! otherwise final.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tally_stripe::{
    Client, Config, CustomerParams, ErrorKind, IdempotencyKey, RetryPolicy, API_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers each connection with the next scripted response (status, extra headers, body) and
/// records the raw requests.
async fn scripted(
    responses: Vec<(u16, &'static str, &'static str)>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        for (status, headers, body) in responses {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then as much body as Content-Length says.
            loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).to_string());
            let resp = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nRequest-Id: req_{n}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len(),
                n = log.lock().unwrap().len(),
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            s.shutdown().await.ok();
        }
    });
    (base, seen)
}

fn client(base: &str) -> Client {
    let mut cfg = Config::new("sk_test_wire").with_base_url(base);
    cfg.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(10),
    };
    Client::new(cfg).unwrap()
}

const CUSTOMER: &str = r#"{"id":"cus_1","object":"customer","email":"a@b.c","name":null,"metadata":{"tally_customer":"c1"}}"#;
const INVALID: &str =
    r#"{"error":{"type":"invalid_request_error","message":"try later","param":"email"}}"#;

#[tokio::test]
async fn a_post_carries_version_key_idempotency_key_and_a_bracketed_body() {
    let (base, seen) = scripted(vec![(200, "", CUSTOMER)]).await;
    let params = CustomerParams {
        email: Some("a@b.c".into()),
        name: None,
        metadata: [("tally_customer".to_string(), "c1".to_string())].into(),
    };
    let r = client(&base)
        .create_customer(&params, &IdempotencyKey::from_row("customer", "c1", 1))
        .await
        .unwrap();
    assert_eq!(r.meta.request_id.as_deref(), Some("req_1"));
    assert_eq!(r.value.metadata["tally_customer"], "c1");
    let req = seen.lock().unwrap()[0].clone();
    let lower = req.to_ascii_lowercase();
    assert!(req.starts_with("POST /v1/customers HTTP/1.1\r\n"), "{req}");
    assert!(
        lower.contains(&format!(
            "stripe-version: {}\r\n",
            API_VERSION.to_ascii_lowercase()
        )),
        "{req}"
    );
    assert!(
        lower.contains("authorization: bearer sk_test_wire\r\n"),
        "{req}"
    );
    assert!(
        lower.contains("idempotency-key: tally:customer:c1:1\r\n"),
        "{req}"
    );
    assert!(
        lower.contains("content-type: application/x-www-form-urlencoded\r\n"),
        "{req}"
    );
    assert!(
        req.ends_with("\r\n\r\nemail=a%40b.c&metadata%5Btally_customer%5D=c1"),
        "{req}"
    );
}

#[tokio::test]
async fn a_get_sends_its_filters_as_a_query_and_no_idempotency_key() {
    let (base, seen) = scripted(vec![(
        200,
        "",
        r#"{"object":"list","data":[],"has_more":false}"#,
    )])
    .await;
    let prices = client(&base)
        .prices_by_lookup_keys(&["a".into(), "b".into()])
        .await
        .unwrap();
    assert_eq!(prices, vec![]);
    let req = seen.lock().unwrap()[0].clone();
    assert!(
        req.starts_with(
            "GET /v1/prices?lookup_keys%5B%5D=a&lookup_keys%5B%5D=b&limit=100 HTTP/1.1\r\n"
        ),
        "{req}"
    );
    assert!(
        !req.to_ascii_lowercase().contains("idempotency-key"),
        "{req}"
    );
}

#[tokio::test]
async fn should_retry_true_makes_a_400_retryable_and_the_same_key_is_resent() {
    let (base, seen) = scripted(vec![
        (400, "Stripe-Should-Retry: true\r\n", INVALID),
        (200, "", CUSTOMER),
    ])
    .await;
    let r = client(&base)
        .create_customer(
            &CustomerParams::default(),
            &IdempotencyKey::from_row("customer", "c1", 1),
        )
        .await
        .unwrap();
    assert_eq!(r.meta.attempts, 2);
    assert_eq!(r.meta.request_id.as_deref(), Some("req_2"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for req in seen.iter() {
        assert!(req
            .to_ascii_lowercase()
            .contains("idempotency-key: tally:customer:c1:1\r\n"));
    }
}

#[tokio::test]
async fn a_400_without_the_header_is_final() {
    let (base, seen) = scripted(vec![(400, "", INVALID), (200, "", CUSTOMER)]).await;
    let e = client(&base)
        .create_customer(
            &CustomerParams::default(),
            &IdempotencyKey::from_row("customer", "c1", 1),
        )
        .await
        .unwrap_err();
    assert_eq!((e.attempts, e.status), (1, Some(400)));
    assert_eq!(e.request_id.as_deref(), Some("req_1"));
    assert_eq!(
        e.kind,
        ErrorKind::InvalidRequest {
            param: Some("email".into()),
            code: None,
            message: "try later".into()
        }
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn should_retry_false_makes_a_503_final() {
    let (base, seen) = scripted(vec![
        (
            503,
            "Stripe-Should-Retry: false\r\n",
            r#"{"error":{"type":"api_error","message":"down"}}"#,
        ),
        (200, "", CUSTOMER),
    ])
    .await;
    let e = client(&base).customer("cus_1").await.unwrap_err();
    assert_eq!(e.attempts, 1);
    assert_eq!(
        e.kind,
        ErrorKind::Unavailable {
            status: 503,
            message: "down".into()
        }
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}
