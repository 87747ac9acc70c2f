//! `POST /v1/events` reads a body in one pass when it can; whatever the body, the answer must be
//! exactly the one of reading it as a list of raw values and parsing each event on its own (the
//! way every batch was read before): same events, or same error with the same invalid indexes,
//! codes and messages.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use tally_server::config::{parse_catalog, EXAMPLE_CATALOG};
use tally_server::service::events;
use tally_server::{ApiError, AppState, Config};
use tally_store::{CustomerUpsert, NewEvent};

/// The catalog of the examples plus a metric that counts distinct values and one that allows
/// negative values.
fn catalog() -> String {
    format!(
        "{EXAMPLE_CATALOG}
[metrics.seats]
name = \"Seats\"
unit = \"seat\"
aggregation = \"unique_count\"
unique_property = \"user\"
kind = \"metered\"

[metrics.balance]
name = \"Balance\"
unit = \"eur\"
aggregation = \"sum\"
kind = \"metered\"
allow_negative = true
"
    )
}

async fn state(dir: &tempfile::TempDir) -> AppState {
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let store = tally_store::connect(&url).await.unwrap();
    for id in ["acme", "beta"] {
        store
            .upsert_customer(CustomerUpsert {
                email_opt_out: None,
                id: id.into(),
                email: None,
                name: None,
                metadata: None,
                now: "2026-01-31T12:00:00Z".parse().unwrap(),
            })
            .await
            .unwrap();
    }
    let mut config = Config::new(url).unwrap();
    config.catalog = Arc::new(parse_catalog(&catalog(), "test.toml").unwrap());
    AppState::new(config, store)
}

/// The previous reading: the body as raw values, each event parsed on its own.
async fn per_event(
    state: &AppState,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>, ApiError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        events: Option<Vec<&'a RawValue>>,
    }
    let b: Body<'_> = serde_json::from_slice(body).map_err(|e| ApiError::malformed_json(&e))?;
    let Some(list) = b.events else {
        return Err(ApiError::bad_request(
            "missing_events",
            "the body must be {\"events\": [...]}",
        )
        .with_param("events"));
    };
    events::validate(state, &list, now).await
}

fn show(r: Result<Vec<NewEvent>, ApiError>) -> String {
    match r {
        Ok(events) => format!("{events:?}"),
        Err(e) => format!(
            "{} {} {} {:?} {}",
            e.status,
            e.code,
            e.message,
            e.param,
            serde_json::to_string(&e.invalid).unwrap()
        ),
    }
}

async fn same(state: &AppState, body: &str) {
    let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
    let one_pass = events::validate_body(state, body.as_bytes(), now)
        .await
        .map(|b| b.events);
    let before = per_event(state, body.as_bytes(), now).await;
    assert_eq!(show(one_pass), show(before), "{body}");
}

const EXAMPLES: &[&str] = &[
    r#"{"events":[{"id":"evt_1","customer":"acme","metric":"compute_hours","value":2.5,"timestamp":"2026-11-21T10:00:00Z","properties":{"vm":"vm-7"}}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours","value":1,"timestamp":"2026-11-21T09:00:00.123456789+00:00"},{"id":"e2","customer":"beta","metric":"vms","value":"3"}]}"#,
    r#"{"events":[{"id":"e\u0031","customer":"acme","metric":"compute_hours"}]}"#,
    r#"{"events":[{"id":"e1","customer":"nobody","metric":"compute_hours"},{"id":"","customer":"acme","metric":"compute_hours"},{"customer":"acme","metric":"x"}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours","value":-1},{"id":"e2","customer":"acme","metric":"balance","value":-1}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"seats","properties":{"user":"u1"}},{"id":"e2","customer":"acme","metric":"seats","properties":{"user":7}},{"id":"e3","customer":"acme","metric":"seats"}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours","timestamp":"2026-11-21T10:06:00Z"},{"id":"e2","customer":"acme","metric":"compute_hours","timestamp":"yesterday"},{"id":"e3","customer":"acme","metric":"compute_hours","timestamp":"2026-02-29T10:00:00Z"}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours","timestamp":"2025-12-31T23:59:59Z"},{"id":"e2","customer":"acme","metric":"compute_hours","timestamp":"2026-11-21T10:00:00+02:00"}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours","value":"1e3"},{"id":"e2","customer":"acme","metric":"compute_hours","value":"NaN"},{"id":"e3","customer":"acme","metric":"compute_hours","value":true}]}"#,
    r#"{"events":[{"id":"e1","id":"e2"},5,"x",null,{"id":null},{"properties":[1]}]}"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours","extra":{"a":[1,2]}}],"other":true}"#,
    r#"{"events":[]}"#,
    r#"{"events":null}"#,
    r#"{"other":[]}"#,
    r#"{"events":[{"id":"e1"}]"#,
    r#"{"events":{"id":"e1"}}"#,
    r#"[[{"id":"e1","customer":"acme","metric":"compute_hours"}]]"#,
    r#"{"events":[{"id":"e1","customer":"acme","metric":"compute_hours"}],"events":[]}"#,
    "{\"events\":[{\"id\":\"e\u{1}\",\"customer\":\"acme\",\"metric\":\"compute_hours\"}]}",
    "",
];

#[tokio::test]
async fn one_pass_reading_answers_as_reading_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    for body in EXAMPLES {
        same(&state, body).await;
    }
    let many = format!(
        "{{\"events\":[{}]}}",
        vec![r#"{"id":"e","customer":"acme","metric":"compute_hours"}"#; 1001].join(",")
    );
    same(&state, &many).await;
}

/// A field of an event, valid or not, in the forms the common-shape reader takes and the ones it
/// leaves to serde_json.
fn member() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("id"),
        Just("customer"),
        Just("metric"),
        Just("value"),
        Just("timestamp"),
        Just("properties"),
        Just("other"),
    ];
    let value = prop_oneof![
        Just("\"e1\"".to_owned()),
        Just("\"acme\"".to_owned()),
        Just("\"beta\"".to_owned()),
        Just("\"nobody\"".to_owned()),
        Just("\"compute_hours\"".to_owned()),
        Just("\"seats\"".to_owned()),
        Just("\"2026-11-21T09:00:00Z\"".to_owned()),
        Just("\"2026-11-21T09:00:00.5+00:00\"".to_owned()),
        Just("\"2030-01-01T00:00:00Z\"".to_owned()),
        Just("\"a\\\"b\"".to_owned()),
        Just("\"\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("{\"user\":\"u\"}".to_owned()),
        Just("[]".to_owned()),
        "-?(0|[1-9][0-9]{0,3})(\\.[0-9]{1,3})?([eE][+-]?[0-9])?",
        "\"-?[0-9]{1,3}(\\.[0-9])?\"",
        "[0-9.eE+-]{1,4}",
        boundary_decimal(),
        boundary_decimal().prop_map(|d| format!("\"{d}\"")),
        "\"[-+0-9._eE ]{0,8}\"",
    ];
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t")];
    (key, ws, value).prop_map(|(k, w, v)| format!("\"{k}\"{w}:{w}{v}"))
}

/// Decimals around the limits of an event value (15 integer digits, 9 places, 18 significant
/// digits), with and without an exponent.
fn boundary_decimal() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[1-9][0-9]{13,15}(\\.[0-9]{1,4})?",
        "-?0\\.[0-9]{8,10}",
        "-?[1-9][0-9]{8,9}\\.[0-9]{8,9}",
        "-?[1-9](\\.[0-9]{1,3})?[eE][+-]?(9|1[0-6])",
        Just("79228162514264337593543950335".to_owned()),
        Just("0.123456789012345678901234567890".to_owned()),
    ]
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(member(), 0..7).prop_map(|m| format!("{{{}}}", m.join(","))),
        1 => Just("5".to_owned()),
        1 => Just("{\"id\":\"e1\",}".to_owned()),
    ]
}

/// The codes `POST /v1/events` answers with (docs/api.md), for the batch and for each event.
const BATCH_CODES: &[&str] = &[
    "malformed_json",
    "missing_events",
    "empty_batch",
    "batch_too_large",
    "invalid_events",
];
const EVENT_CODES: &[&str] = &[
    "missing_id",
    "invalid_id",
    "missing_customer",
    "unknown_customer",
    "missing_metric",
    "unknown_metric",
    "invalid_value",
    "negative_value",
    "invalid_timestamp",
    "timestamp_in_future",
    "timestamp_outside_dedup_window",
    "timestamp_before_customer",
    "invalid_properties",
    "missing_property",
    "malformed_event",
];

/// Reads `body` both ways, which must agree, and checks that an error is a documented one.
async fn documented(state: &AppState, body: &[u8]) -> Result<(), TestCaseError> {
    let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
    let one_pass = events::validate_body(state, body, now)
        .await
        .map(|b| b.events);
    if let Err(e) = &one_pass {
        prop_assert!(BATCH_CODES.contains(&e.code), "{}", e.code);
        for item in &e.invalid {
            prop_assert!(EVENT_CODES.contains(&item.code), "{}", item.code);
        }
    }
    if std::str::from_utf8(body).is_ok() {
        let before = per_event(state, body, now).await;
        match (&one_pass, &before) {
            // serde_json names the struct it expected, which differs between the two readers.
            (Err(a), Err(b)) if a.code == "malformed_json" => {
                prop_assert_eq!((a.status, a.code), (b.status, b.code));
            }
            _ => prop_assert_eq!(show(one_pass), show(before)),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_bytes_answer_a_documented_error(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        wrap in any::<bool>(),
    ) {
        // Random bytes alone, and inside the envelope so that they reach the event reader.
        let body = if wrap {
            [&b"{\"events\":[{\"id\":\"e\",\"customer\":\"acme\",\"metric\":\"compute_hours\",\"value\":"[..], &bytes, b"}]}"].concat()
        } else {
            bytes
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let state = state(&dir).await;
            let r = documented(&state, &body).await;
            state.store.close().await;
            r
        })?;
    }

    #[test]
    fn any_value_is_a_decimal_within_the_limits_or_an_invalid_value(
        value in prop_oneof![boundary_decimal(), "[-+0-9._eE \"]{0,12}", Just("null".to_owned())],
        extra in prop_oneof![Just(""), Just(",\"properties\":{}")],
    ) {
        let body = format!(
            r#"{{"events":[{{"id":"e","customer":"acme","metric":"balance","value":{value}{extra}}}]}}"#
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let state = state(&dir).await;
            documented(&state, body.as_bytes()).await?;
            let now: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
            let r = events::validate_body(&state, body.as_bytes(), now).await.map(|b| b.events);
            let json: Option<serde_json::Value> = serde_json::from_str(&value).ok();
            match r {
                Ok(events) => {
                    // Taken: exactly the number written, within the limits.
                    let v = events[0].value;
                    prop_assert!(tally_core::decimal::check(v, &tally_core::decimal::EVENT_VALUE).is_ok());
                    let text = match &json {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        _ => value.trim().to_owned(),
                    };
                    let reference = rust_decimal::Decimal::from_scientific(&text)
                        .or_else(|_| text.parse::<rust_decimal::Decimal>())
                        .unwrap();
                    prop_assert_eq!(v, reference);
                }
                Err(e) if e.code == "invalid_events" => {
                    prop_assert_eq!(e.invalid.len(), 1);
                    prop_assert_eq!(e.invalid[0].code, "invalid_value");
                }
                Err(e) => prop_assert_eq!(e.code, "malformed_json"),
            }
            state.store.close().await;
            Ok(())
        })?;
    }

    #[test]
    fn a_credit_amount_never_panics(
        text in prop_oneof![boundary_decimal(), "[-+0-9._eE ]{0,14}"],
        as_string in any::<bool>(),
    ) {
        let v = if as_string {
            Some(serde_json::Value::String(text.clone()))
        } else {
            serde_json::from_str::<serde_json::Value>(&text).ok()
        };
        if let Some(v) = v {
            match tally_server::service::credits::parse_amount(&v, "amount") {
                Ok(d) => {
                    prop_assert!(d.abs() <= tally_server::service::credits::MAX_AMOUNT);
                    prop_assert!(d.scale() <= tally_server::service::credits::MAX_SCALE);
                }
                Err(e) => prop_assert_eq!(e.code, "invalid_amount"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_batch_answers_as_reading_event_by_event(
        events in prop::collection::vec(event(), 0..5),
        tail in prop_oneof![Just(""), Just(" "), Just("x"), Just(",\"events\":[]")],
    ) {
        let body = format!("{{\"events\":[{}]{tail}}}", events.join(","));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let state = state(&dir).await;
            same(&state, &body).await;
            state.store.close().await;
        });
    }
}
