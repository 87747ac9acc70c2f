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
    ];
    let ws = prop_oneof![Just(""), Just(" "), Just("\n\t")];
    (key, ws, value).prop_map(|(k, w, v)| format!("\"{k}\"{w}:{w}{v}"))
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(member(), 0..7).prop_map(|m| format!("{{{}}}", m.join(","))),
        1 => Just("5".to_owned()),
        1 => Just("{\"id\":\"e1\",}".to_owned()),
    ]
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
