//! Webhook signatures and event parsing against real and assembled Stripe deliveries.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::PathBuf;
use std::time::Duration;
use tally_stripe::event::{Event, EventKind};
use tally_stripe::model::SubscriptionStatus;
use tally_stripe::webhook::{verify, SignatureError, DEFAULT_TOLERANCE};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stripe-sim/tests/fixtures")
}

struct Vector {
    payload: Vec<u8>,
    header: String,
    secret: String,
    timestamp: i64,
}

fn real_vector() -> Vector {
    let dir = fixtures().join("real_signed");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("invoice.payment_succeeded.basil.vector.json")).unwrap(),
    )
    .unwrap();
    Vector {
        payload: std::fs::read(dir.join(v["payload_file"].as_str().unwrap())).unwrap(),
        header: v["stripe_signature_header"].as_str().unwrap().to_string(),
        secret: v["secret"].as_str().unwrap().to_string(),
        timestamp: v["timestamp"].as_i64().unwrap(),
    }
}

fn sign(secret: &str, t: i64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

#[test]
fn real_delivery_verifies_with_a_pinned_clock() {
    let v = real_vector();
    let secrets = [v.secret.as_str()];
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &secrets,
            v.timestamp,
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );
    // 300 s later is still inside the tolerance; 301 s is not.
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &secrets,
            v.timestamp + 300,
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &secrets,
            v.timestamp + 301,
            DEFAULT_TOLERANCE
        ),
        Err(SignatureError::TooOld {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
    // A timestamp in the future is accepted, as Stripe's SDKs do.
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &secrets,
            v.timestamp - 3600,
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );
}

#[test]
fn tampered_body_or_wrong_secret_is_rejected() {
    let v = real_vector();
    let mut tampered = v.payload.clone();
    // Flip one byte inside the body; the JSON stays the same length.
    let pos = tampered.iter().position(|b| *b == b'1').unwrap();
    tampered[pos] = b'2';
    assert_eq!(
        verify(
            &tampered,
            &v.header,
            &[v.secret.as_str()],
            v.timestamp,
            DEFAULT_TOLERANCE
        ),
        Err(SignatureError::NoMatch)
    );
    // The secret without its whsec_ prefix is a different key.
    let bare = v.secret.trim_start_matches("whsec_");
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &[bare],
            v.timestamp,
            DEFAULT_TOLERANCE
        ),
        Err(SignatureError::NoMatch)
    );
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &["whsec_other"],
            v.timestamp,
            DEFAULT_TOLERANCE
        ),
        Err(SignatureError::NoMatch)
    );
    assert_eq!(
        verify(&v.payload, &v.header, &[], v.timestamp, DEFAULT_TOLERANCE),
        Err(SignatureError::NoSecret)
    );
}

#[test]
fn secret_rotation_and_several_v1_values() {
    let v = real_vector();
    // The old secret is still listed second while the new one is rolled out.
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &["whsec_new", v.secret.as_str()],
            v.timestamp,
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );
    // Stripe signs with both secrets during a roll: any v1 may match.
    let t = 1_800_000_000;
    let body = br#"{"id":"evt_1","object":"event"}"#;
    let header = format!(
        "t={t},v1={},v1={}",
        sign("whsec_old", t, body),
        sign("whsec_new", t, body)
    );
    assert_eq!(
        verify(body, &header, &["whsec_new"], t, DEFAULT_TOLERANCE),
        Ok(())
    );
    assert_eq!(
        verify(body, &header, &["whsec_old"], t, DEFAULT_TOLERANCE),
        Ok(())
    );
    assert_eq!(
        verify(body, &header, &["whsec_third"], t, DEFAULT_TOLERANCE),
        Err(SignatureError::NoMatch)
    );
    // A garbage v1 next to a good one does not spoil it.
    let header = format!("t={t},v1=zz,v1={}", sign("whsec_new", t, body));
    assert_eq!(
        verify(body, &header, &["whsec_new"], t, DEFAULT_TOLERANCE),
        Ok(())
    );
}

#[test]
fn v0_alone_is_never_accepted() {
    let v = real_vector();
    let v0_only: String = v
        .header
        .split(',')
        .filter(|p| !p.starts_with("v1="))
        .collect::<Vec<_>>()
        .join(",");
    assert!(v0_only.contains("v0="));
    assert_eq!(
        verify(
            &v.payload,
            &v0_only,
            &[v.secret.as_str()],
            v.timestamp,
            DEFAULT_TOLERANCE
        ),
        Err(SignatureError::NoV1Signature)
    );
    // Even a v0 that is a correct HMAC is ignored.
    let t = 1_800_000_000;
    let body = b"{}";
    let header = format!("t={t},v0={}", sign("whsec_x", t, body));
    assert_eq!(
        verify(body, &header, &["whsec_x"], t, DEFAULT_TOLERANCE),
        Err(SignatureError::NoV1Signature)
    );
}

#[test]
fn missing_or_malformed_headers_are_rejected() {
    let v = real_vector();
    let s = [v.secret.as_str()];
    let check = |h: &str| verify(&v.payload, h, &s, v.timestamp, DEFAULT_TOLERANCE);
    assert_eq!(check(""), Err(SignatureError::Malformed));
    assert_eq!(check("garbage"), Err(SignatureError::Malformed));
    assert_eq!(check("t=abc,v1=00"), Err(SignatureError::Malformed));
    let no_t: String = v
        .header
        .split(',')
        .filter(|p| !p.starts_with("t="))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(check(&no_t), Err(SignatureError::NoTimestamp));
    // The signature of another timestamp does not verify.
    let shifted = v.header.replacen(
        &format!("t={}", v.timestamp),
        &format!("t={}", v.timestamp + 1),
        1,
    );
    assert_eq!(check(&shifted), Err(SignatureError::NoMatch));
    // A custom, shorter tolerance.
    assert_eq!(
        verify(
            &v.payload,
            &v.header,
            &s,
            v.timestamp + 11,
            Duration::from_secs(10)
        ),
        Err(SignatureError::TooOld {
            age_secs: 11,
            tolerance_secs: 10
        })
    );
}

fn event(name: &str) -> Event {
    let bytes = std::fs::read(fixtures().join("events").join(name)).unwrap();
    Event::parse(&bytes).unwrap()
}

#[test]
fn the_real_signed_payload_parses_as_invoice_payment_succeeded() {
    let v = real_vector();
    let e = Event::parse(&v.payload).unwrap();
    assert_eq!(e.event_type, "invoice.payment_succeeded");
    let EventKind::InvoicePaymentSucceeded(inv) = e.kind else {
        panic!("{:?}", e.kind)
    };
    assert!(inv.id.as_deref().unwrap().starts_with("in_"));
}

#[test]
fn checkout_completed_subscription_and_payment() {
    let e = event("checkout.session.completed.subscription.synth.json");
    assert_eq!(e.event_type, "checkout.session.completed");
    assert!(e.id.starts_with("evt_"));
    let EventKind::CheckoutCompleted(s) = &e.kind else {
        panic!("{:?}", e.kind)
    };
    assert_eq!(s.mode, "subscription");
    assert_eq!(s.payment_status.as_deref(), Some("paid"));
    assert_eq!(s.subscription.as_deref(), Some("sub_TestSubscription0001"));
    assert_eq!(s.customer.as_deref(), Some("cus_TestCustomer0001"));
    assert_eq!(s.payment_intent, None);

    let e = event("checkout.session.completed.payment.synth.json");
    let EventKind::CheckoutCompleted(s) = &e.kind else {
        panic!("{:?}", e.kind)
    };
    assert_eq!(s.mode, "payment");
    assert_eq!(
        s.payment_intent.as_deref(),
        Some("pi_TestPaymentIntent0001")
    );
    assert_eq!(s.subscription, None);
}

#[test]
fn subscription_updated_keeps_previous_attributes() {
    let e = event("customer.subscription.updated.cancel_at_period_end.synth.json");
    let EventKind::SubscriptionUpdated {
        subscription,
        previous,
    } = &e.kind
    else {
        panic!("{:?}", e.kind)
    };
    assert!(subscription.cancel_at_period_end);
    assert_eq!(previous.cancel_at_period_end, Some(false));
    assert!(e.changed.contains("cancel_at_period_end"));

    let e = event("customer.subscription.updated.basil.real.json");
    let EventKind::SubscriptionUpdated {
        subscription,
        previous,
    } = &e.kind
    else {
        panic!("{:?}", e.kind)
    };
    assert!(!subscription.items.is_empty());
    let item = &subscription.items[0];
    assert!(item.price.starts_with("price_"));
    assert!(item.current_period_end > item.current_period_start);
    // A renewal moves the items' periods and the latest invoice.
    assert_eq!(
        e.changed,
        ["items", "latest_invoice"].map(String::from).into()
    );
    assert!(previous.items);
    assert_eq!(previous.status, None);
}

#[test]
fn subscription_deleted_and_invoices() {
    let e = event("customer.subscription.deleted.basil.synth.json");
    let EventKind::SubscriptionDeleted(s) = &e.kind else {
        panic!("{:?}", e.kind)
    };
    assert_eq!(s.status, SubscriptionStatus::Canceled);

    let e = event("invoice.paid.basil.synth.json");
    let EventKind::InvoicePaid(inv) = &e.kind else {
        panic!("{:?}", e.kind)
    };
    assert_eq!(inv.status.as_deref(), Some("paid"));
    assert_eq!(
        inv.subscription.as_deref(),
        Some("sub_1RMgafCMHTTliF5imBKfvfyV")
    );
    assert_eq!(
        (inv.amount_paid, inv.total, inv.amount_remaining),
        (4999, 4999, 0)
    );

    let e = event("invoice.payment_failed.basil.synth.json");
    let EventKind::InvoicePaymentFailed(inv) = &e.kind else {
        panic!("{:?}", e.kind)
    };
    assert_eq!(inv.status.as_deref(), Some("open"));
    assert_eq!(inv.subscription.as_deref(), Some("sub_1234"));
    assert_eq!(
        (inv.amount_paid, inv.total, inv.amount_remaining),
        (0, 24900, 24900)
    );

    let e = event("invoice.payment_succeeded.basil.real.json");
    assert!(matches!(e.kind, EventKind::InvoicePaymentSucceeded(_)));
}

#[test]
fn other_types_are_unhandled_and_garbage_is_an_error() {
    assert_eq!(
        event("billing.meter.created.synth.json").kind,
        EventKind::Unhandled
    );
    assert!(Event::parse(b"not json").is_err());
    let err = Event::parse(
        br#"{"id":"evt_x","type":"invoice.paid","created":1,"data":{"object":{"id":3}}}"#,
    )
    .unwrap_err();
    assert_eq!(err.id.as_deref(), Some("evt_x"));
}
