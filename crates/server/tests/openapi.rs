//! The OpenAPI document is complete: every operation lists the answers it can give, each with a
//! schema, and the customer id parameter's pattern is exactly what the server accepts.

mod common;

use common::*;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((path.clone(), m.to_owned(), op.clone()));
            }
        }
    }
    out
}

fn statuses(op: &Value) -> Vec<&str> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn every_operation_lists_its_answers_with_schemas() {
    let app = app_with(|_| {}).await;
    let r = app.http.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(
        doc,
        serde_json::to_value(tally_server::openapi::build()).unwrap()
    );
    let ops = operations(&doc);
    // Every route of the router (a new route must be documented to pass).
    assert_eq!(
        ops.len(),
        43,
        "{:?}",
        ops.iter().map(|o| (&o.0, &o.1)).collect::<Vec<_>>()
    );
    for (path, method, op) in &ops {
        let at = format!("{method} {path}");
        for (status, resp) in op["responses"].as_object().unwrap() {
            if status == "204" {
                assert!(resp.get("content").is_none(), "{at} {status}");
                continue;
            }
            let content = resp["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{at} {status} has no content"));
            assert_eq!(content.len(), 1, "{at} {status}");
            let (media, c) = content.iter().next().unwrap();
            assert!(c["schema"].is_object(), "{at} {status} has no schema");
            if status.starts_with('4') || status.starts_with('5') {
                if path == "/health" {
                    continue;
                }
                assert_eq!(media, "application/json", "{at} {status}");
                let r = c["schema"]["$ref"].as_str().unwrap_or_default();
                assert!(
                    r == "#/components/schemas/ErrorBody"
                        || (status == "402" && r == "#/components/schemas/InsufficientBody"),
                    "{at} {status}: {r}"
                );
            }
        }
        let st = statuses(op);
        if path.starts_with("/v1/") {
            for s in ["401", "403", "429", "503"] {
                assert!(st.contains(&s), "{at} lacks {s}");
            }
        }
        if op.get("requestBody").is_some() {
            for s in ["400", "408", "413", "415"] {
                assert!(st.contains(&s), "{at} lacks {s}");
            }
        }
        if path.contains("{id}") {
            assert!(st.contains(&"400") && st.contains(&"404"), "{at}");
            let id = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "id")
                .unwrap();
            assert_eq!(id["in"], "path");
            assert_eq!(
                id["schema"]["pattern"],
                tally_server::openapi::CUSTOMER_ID_PATTERN
            );
            assert_eq!(id["schema"]["maxLength"], 255);
            assert_eq!(id["schema"]["minLength"], 1);
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// The pattern's character class and length, read from the pattern itself.
fn pattern_accepts(id: &str) -> bool {
    let p = tally_server::openapi::CUSTOMER_ID_PATTERN;
    let class = &p[p.find('[').unwrap() + 1..p.find(']').unwrap()];
    let (min, max) = p[p.find('{').unwrap() + 1..p.find('}').unwrap()]
        .split_once(',')
        .unwrap();
    let (min, max): (usize, usize) = (min.parse().unwrap(), max.parse().unwrap());
    let chars: Vec<char> = class.chars().collect();
    let in_class = |c: char| {
        let mut i = 0;
        while i < chars.len() {
            if i + 2 < chars.len() && chars[i + 1] == '-' {
                if (chars[i]..=chars[i + 2]).contains(&c) {
                    return true;
                }
                i += 3;
            } else {
                if chars[i] == c {
                    return true;
                }
                i += 1;
            }
        }
        false
    };
    let n = id.chars().count();
    (min..=max).contains(&n) && id.chars().all(in_class)
}

#[test]
fn the_customer_id_pattern_is_exactly_what_the_server_accepts() {
    for b in 0u8..=255 {
        let c = char::from(b);
        let id = c.to_string();
        assert_eq!(
            pattern_accepts(&id),
            tally_store::is_valid_customer_id(&id),
            "{c:?}"
        );
    }
    for n in [0, 1, 2, 254, 255, 256, 300] {
        let id = "a".repeat(n);
        assert_eq!(
            pattern_accepts(&id),
            tally_store::is_valid_customer_id(&id),
            "{n}"
        );
    }
    assert!(pattern_accepts("cus_1.a:b@c-d"));
}
