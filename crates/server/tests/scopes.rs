//! Scoped API keys and the audit log, through the real server on both backends: the scope matrix
//! (every route × every kind of key), the audit rows of a scripted session, and the refusal of
//! keys that cannot exist.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tally_server::config::parse_catalog;
use tally_server::service::keys::{self, Caller, Scope};

#[macro_use]
mod common;

use common::{app_on, App, Db, KEY};

const CATALOG: &str = include_str!("fixtures/credits.toml");

async fn app(db: Db) -> Option<App> {
    app_on(db, |c| {
        c.catalog = Arc::new(parse_catalog(CATALOG, "fixtures/credits.toml").unwrap());
    })
    .await
}

impl App {
    /// A stored key's secret.
    async fn key(&self, scope: Scope, customer: Option<&str>) -> (String, String) {
        let (k, secret) = keys::create(
            &*self.server.state().store,
            "test",
            scope,
            customer,
            None,
            self.server.state().clock.now(),
        )
        .await
        .unwrap();
        (k.id, secret)
    }

    async fn call(
        &self,
        secret: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(secret);
        if let Some(b) = body {
            r = r.json(b);
        }
        if let Some(k) = idempotency_key {
            r = r.header("Idempotency-Key", k);
        }
        let r = r.send().await.unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

/// A status and, for a 403, its error code.
type Answer = (StatusCode, Option<String>);

/// What a route needs, as documented in docs/api.md.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Needs {
    Read,
    App,
    Admin,
}

/// Routes about every customer at once: keys limited to one customer are refused.
const EVERY_CUSTOMER: &[&str] = &["/v1/metrics/business"];

/// One route: method, template, what it needs, whether it names a customer, the status of a
/// successful call, and the request for customer `c`: (path, body).
struct Route {
    method: Method,
    template: &'static str,
    needs: Needs,
    names_customer: bool,
    ok: StatusCode,
    request: fn(&str) -> (String, Option<Value>),
}

fn routes() -> Vec<Route> {
    use Needs::*;
    let r = |method: Method,
             template: &'static str,
             needs: Needs,
             names_customer: bool,
             ok: StatusCode,
             request: fn(&str) -> (String, Option<Value>)| Route {
        method,
        template,
        needs,
        names_customer,
        ok,
        request,
    };
    let ok = StatusCode::OK;
    vec![
        r(Method::GET, "/v1/plans", Read, false, ok, |_| {
            ("/v1/plans".into(), None)
        }),
        r(Method::GET, "/v1/customers/{id}", Read, true, ok, |c| {
            (format!("/v1/customers/{c}"), None)
        }),
        r(Method::PUT, "/v1/customers/{id}", App, true, ok, |c| {
            (format!("/v1/customers/{c}"), Some(json!({})))
        }),
        r(
            Method::GET,
            "/v1/customers/{id}/subscription",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/subscription"), None),
        ),
        r(
            Method::PUT,
            "/v1/customers/{id}/subscription",
            Admin,
            true,
            ok,
            |c| {
                (
                    format!("/v1/customers/{c}/subscription"),
                    Some(json!({"plan": "pro"})),
                )
            },
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/billing",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/billing"), None),
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/usage",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/usage"), None),
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/invoices",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/invoices"), None),
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/invoices/upcoming",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/invoices/upcoming"), None),
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/transactions",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/transactions"), None),
        ),
        r(Method::POST, "/v1/events", App, true, ok, |c| {
            let events = json!({"events": [
                {"id": "m1", "customer": c, "metric": "builds", "value": 1},
                {"id": "m2", "customer": c, "metric": "builds", "value": 1},
            ]});
            ("/v1/events".into(), Some(events))
        }),
        r(Method::GET, "/v1/audit", Admin, false, ok, |_| {
            ("/v1/audit".into(), None)
        }),
        r(
            Method::GET,
            "/v1/customers/{id}/credits",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/credits"), None),
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/credits/grants",
            Admin,
            true,
            ok,
            |c| {
                let body =
                    json!({"amount": "5", "reason": "matrix", "idempotency_key": "matrix-grant"});
                (format!("/v1/customers/{c}/credits/grants"), Some(body))
            },
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/credits/consume",
            App,
            true,
            ok,
            |c| {
                let body = json!({"amount": 1, "idempotency_key": "matrix-consume"});
                (format!("/v1/customers/{c}/credits/consume"), Some(body))
            },
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/audit",
            Admin,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/audit"), None),
        ),
        r(
            Method::GET,
            "/v1/customers/{id}/notifications",
            Read,
            true,
            ok,
            |c| (format!("/v1/customers/{c}/notifications"), None),
        ),
        r(Method::POST, "/v1/entitlements/check", App, true, ok, |c| {
            (
                "/v1/entitlements/check".into(),
                Some(json!({"customer": c, "feature": "sso"})),
            )
        }),
        // Without STRIPE_API_KEY these answer 503 stripe_not_configured once the scope and
        // customer checks have passed.
        r(
            Method::POST,
            "/v1/checkout-sessions",
            App,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    "/v1/checkout-sessions".into(),
                    Some(json!({"customer": c, "plan": "pro", "interval": "month"})),
                )
            },
        ),
        r(
            Method::POST,
            "/v1/portal-sessions",
            App,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    "/v1/portal-sessions".into(),
                    Some(json!({"customer": c, "return_url": "https://app.test/billing"})),
                )
            },
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/subscription/change",
            Admin,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    format!("/v1/customers/{c}/subscription/change"),
                    Some(json!({"plan": "pro"})),
                )
            },
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/subscription/cancel",
            Admin,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    format!("/v1/customers/{c}/subscription/cancel"),
                    Some(json!({})),
                )
            },
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/refunds",
            Admin,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    format!("/v1/customers/{c}/refunds"),
                    Some(json!({"payment": "txn_1", "reason": "requested_by_customer"})),
                )
            },
        ),
        r(
            Method::PUT,
            "/v1/customers/{id}/auto-top-up",
            App,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    format!("/v1/customers/{c}/auto-top-up"),
                    Some(json!({"threshold": 10, "pack": "small", "max_per_month": 3})),
                )
            },
        ),
        // No settings: the scope and customer checks come first, then 404.
        r(
            Method::GET,
            "/v1/customers/{id}/auto-top-up",
            Read,
            true,
            StatusCode::NOT_FOUND,
            |c| (format!("/v1/customers/{c}/auto-top-up"), None),
        ),
        r(
            Method::DELETE,
            "/v1/customers/{id}/auto-top-up",
            App,
            true,
            StatusCode::NOT_FOUND,
            |c| (format!("/v1/customers/{c}/auto-top-up"), None),
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/subscription/resume",
            Admin,
            true,
            StatusCode::SERVICE_UNAVAILABLE,
            |c| {
                (
                    format!("/v1/customers/{c}/subscription/resume"),
                    Some(json!({})),
                )
            },
        ),
        // Without --movable-clock the clock stays the system clock: 409 once the scope passed.
        r(
            Method::POST,
            "/v1/clock/advance",
            Admin,
            false,
            StatusCode::CONFLICT,
            |_| ("/v1/clock/advance".into(), Some(json!({"by": "1d"}))),
        ),
        r(Method::GET, "/v1/flags", Read, true, ok, |c| {
            (format!("/v1/flags?customer={c}"), None)
        }),
        r(Method::GET, "/v1/metrics/business", Read, false, ok, |_| {
            ("/v1/metrics/business?month=2026-01".into(), None)
        }),
        r(
            Method::PUT,
            "/v1/customers/{id}/flags/{flag}",
            Admin,
            true,
            ok,
            |c| {
                (
                    format!("/v1/customers/{c}/flags/new_ui"),
                    Some(json!({"enabled": true})),
                )
            },
        ),
        r(
            Method::POST,
            "/v1/customers/{id}/page-sessions",
            App,
            true,
            StatusCode::CREATED,
            |c| (format!("/v1/customers/{c}/page-sessions"), Some(json!({}))),
        ),
        // No such session: the scope check comes first, then 404 (revocation itself is tested
        // in pages.rs).
        r(
            Method::DELETE,
            "/v1/page-sessions/{session}",
            App,
            false,
            StatusCode::NOT_FOUND,
            |_| ("/v1/page-sessions/ps_missing".into(), None),
        ),
        r(
            Method::DELETE,
            "/v1/customers/{id}/flags/{flag}",
            Admin,
            true,
            StatusCode::NO_CONTENT,
            |c| (format!("/v1/customers/{c}/flags/new_ui"), None),
        ),
        r(
            Method::POST,
            "/v1/webhook-endpoints",
            Admin,
            false,
            ok,
            |_| {
                let body = json!({"url": "http://127.0.0.1:9/hooks", "events": ["*"]});
                ("/v1/webhook-endpoints".into(), Some(body))
            },
        ),
        r(
            Method::GET,
            "/v1/webhook-endpoints",
            Admin,
            false,
            ok,
            |_| ("/v1/webhook-endpoints".into(), None),
        ),
        // The scope is checked before the endpoint is looked up: an unknown one answers 404 to
        // the keys allowed to ask.
        r(
            Method::GET,
            "/v1/webhook-endpoints/{endpoint}",
            Admin,
            false,
            StatusCode::NOT_FOUND,
            |_| ("/v1/webhook-endpoints/we_matrix".into(), None),
        ),
        r(
            Method::DELETE,
            "/v1/webhook-endpoints/{endpoint}",
            Admin,
            false,
            StatusCode::NOT_FOUND,
            |_| ("/v1/webhook-endpoints/we_matrix".into(), None),
        ),
        r(
            Method::POST,
            "/v1/webhook-endpoints/{endpoint}/rotate",
            Admin,
            false,
            StatusCode::NOT_FOUND,
            |_| {
                (
                    "/v1/webhook-endpoints/we_matrix/rotate".into(),
                    Some(json!({})),
                )
            },
        ),
        r(
            Method::GET,
            "/v1/webhook-endpoints/{endpoint}/deliveries",
            Admin,
            false,
            StatusCode::NOT_FOUND,
            |_| ("/v1/webhook-endpoints/we_matrix/deliveries".into(), None),
        ),
    ]
}

/// The (method, path) pairs of the OpenAPI document's `/v1` routes.
async fn documented_routes(app: &App) -> BTreeSet<(String, String)> {
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

/// Every route answers every kind of key exactly as documented; the matrix covers every
/// documented route, so a new route fails here until it has a scope rule and a row.
async fn every_route_answers_every_scope_as_documented(db: Db) {
    let Some(app) = app(db).await else { return };
    for c in ["c1", "c2"] {
        let (s, b) = app.put(&format!("/v1/customers/{c}"), json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = app
            .put(
                &format!("/v1/customers/{c}/subscription"),
                json!({"plan": "pro"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = app
            .post(
                &format!("/v1/customers/{c}/credits/grants"),
                json!({"amount": "100", "reason": "seed", "idempotency_key": "seed"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let routes = routes();
    let in_matrix: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.template.to_owned()))
        .collect();
    assert_eq!(documented_routes(&app).await, in_matrix);

    let (_, app_key) = app.key(Scope::App, None).await;
    let (_, read_key) = app.key(Scope::Read, None).await;
    let (_, c1_key) = app.key(Scope::App, Some("c1")).await;
    let (_, c1_read_key) = app.key(Scope::Read, Some("c1")).await;
    let forbidden = |code: &str| (StatusCode::FORBIDDEN, Some(code.to_owned()));
    let mut checked = 0;
    for r in &routes {
        let ok = (r.ok, None);
        let by_scope = |scope: Scope| {
            let allowed = match r.needs {
                Needs::Read => true,
                Needs::App => scope != Scope::Read,
                Needs::Admin => scope == Scope::Admin,
            };
            if allowed {
                ok.clone()
            } else {
                forbidden("insufficient_scope")
            }
        };
        let limited_other = |scope: Scope| {
            let own = by_scope(scope);
            // Allowed by scope (2xx, or 503 for the Stripe routes without Stripe).
            if own.0 != StatusCode::FORBIDDEN && r.names_customer {
                forbidden("customer_forbidden")
            } else {
                own
            }
        };
        // Routes about every customer refuse any key limited to one customer.
        let limited = |want: Answer| {
            if EVERY_CUSTOMER.contains(&r.template) && want.0 != StatusCode::FORBIDDEN {
                forbidden("customer_forbidden")
            } else {
                want
            }
        };
        let cases: [(&str, &str, &str, Answer); 8] = [
            ("admin", KEY, "c1", by_scope(Scope::Admin)),
            ("app", &app_key, "c1", by_scope(Scope::App)),
            ("read", &read_key, "c1", by_scope(Scope::Read)),
            (
                "app for c1, own",
                &c1_key,
                "c1",
                limited(by_scope(Scope::App)),
            ),
            (
                "app for c1, other",
                &c1_key,
                "c2",
                limited(limited_other(Scope::App)),
            ),
            (
                "read for c1, own",
                &c1_read_key,
                "c1",
                limited(by_scope(Scope::Read)),
            ),
            (
                "read for c1, other",
                &c1_read_key,
                "c2",
                limited(limited_other(Scope::Read)),
            ),
            ("admin, other", KEY, "c2", by_scope(Scope::Admin)),
        ];
        for (who, secret, customer, want) in cases {
            let (path, body) = (r.request)(customer);
            let (s, b) = app
                .call(secret, r.method.clone(), &path, body.as_ref(), None)
                .await;
            let got = (
                s,
                (s == StatusCode::FORBIDDEN)
                    .then(|| b["error"]["code"].as_str().unwrap().to_owned()),
            );
            assert_eq!(got, want, "{who}: {} {path}: {b}", r.method);
            if s == StatusCode::FORBIDDEN {
                assert_eq!(b["error"]["type"], "permission_error", "{b}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * 8);

    // A limited key's events batch must name its customer in every event.
    let mixed = json!({"events": [
        {"id": "x1", "customer": "c1", "metric": "builds", "value": 1},
        {"id": "x2", "customer": "c2", "metric": "builds", "value": 1},
    ]});
    let (s, b) = app
        .call(&c1_key, Method::POST, "/v1/events", Some(&mixed), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error"]["code"], "customer_forbidden");
    assert_eq!(b["error"]["param"], "events[1].customer");
    let ids = app.server.state().store.event_ids("c1").await.unwrap();
    assert!(
        !ids.contains(&"x1".to_owned()),
        "nothing of the batch is stored"
    );
    // A batch it cannot read is refused whole (fail closed).
    for body in [
        json!({"events": "x"}),
        json!({"events": [{"id": "y", "customer": 7}]}),
    ] {
        let (s, b) = app
            .call(&c1_key, Method::POST, "/v1/events", Some(&body), None)
            .await;
        let want = if body["events"].is_array() {
            (StatusCode::FORBIDDEN, "customer_forbidden")
        } else {
            (StatusCode::BAD_REQUEST, "malformed_json")
        };
        assert_eq!((s, b["error"]["code"].as_str().unwrap()), want, "{b}");
    }

    // HEAD is checked as GET; a method a route does not have is 405 for an authenticated key.
    let (s, _) = app
        .call(&c1_key, Method::HEAD, "/v1/customers/c2/usage", None, None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = app
        .call(&c1_key, Method::HEAD, "/v1/customers/c1/usage", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app
        .call(&c1_key, Method::DELETE, "/v1/plans", None, None)
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{b}");
    app.server.shutdown().await.unwrap();
}

/// A scripted session: exactly one audit row per change, with before and after; retried
/// requests and hot-path writes (events, consumption) add none.
async fn the_audit_log_has_one_row_per_mutation(db: Db) {
    let Some(app) = app(db).await else { return };
    let env = Caller::env(KEY).key_id;
    let (app_id, app_key) = app.key(Scope::App, None).await;
    let put = |key: &str, path: &str, body: Value, idem: Option<&str>| {
        let key = key.to_owned();
        let path = path.to_owned();
        let idem = idem.map(str::to_owned);
        let app = &app;
        async move {
            app.call(&key, Method::PUT, &path, Some(&body), idem.as_deref())
                .await
        }
    };
    // 1. customer.created by the app key (and a retry: no row).
    for _ in 0..2 {
        let (s, b) = put(
            &app_key,
            "/v1/customers/a1",
            json!({"name": "A"}),
            Some("signup-a1"),
        )
        .await;
        assert!(s.is_success(), "{b}");
    }
    // 2. customer.updated by the env key.
    let (s, _) = put(KEY, "/v1/customers/a1", json!({"name": "B"}), None).await;
    assert_eq!(s, StatusCode::OK);
    // 3. subscription.created (and a retry).
    for _ in 0..2 {
        let (s, _) = put(
            KEY,
            "/v1/customers/a1/subscription",
            json!({"plan": "pro"}),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    // 4. subscription.updated.
    let (s, _) = put(
        KEY,
        "/v1/customers/a1/subscription",
        json!({"plan": "free"}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // 5. credits.grant (and a retry with the same idempotency key).
    for _ in 0..2 {
        let (s, b) = app
            .post(
                "/v1/customers/a1/credits/grants",
                json!({"amount": "10", "reason": "welcome", "idempotency_key": "g1"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // 6. flag_override.created (and a retry), 7. flag_override.deleted (and a retry).
    for _ in 0..2 {
        let (s, _) = put(
            KEY,
            "/v1/customers/a1/flags/off",
            json!({"enabled": true}),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    for _ in 0..2 {
        let (s, _) = app
            .call(
                KEY,
                Method::DELETE,
                "/v1/customers/a1/flags/off",
                None,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    // Failed changes record nothing.
    let (s, _) = put(
        KEY,
        "/v1/customers/a1/subscription",
        json!({"plan": "nope"}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = put(
        &app_key,
        "/v1/customers/a1/subscription",
        json!({"plan": "pro"}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Hot-path writes are in their own ledgers, with the key that made them.
    let (s, b) = app
        .call(
            &app_key,
            Method::POST,
            "/v1/customers/a1/credits/consume",
            Some(&json!({"amount": 2, "idempotency_key": "c1"})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = app
        .call(
            &app_key,
            Method::POST,
            "/v1/events",
            Some(&json!({"events": [{"id": "e1", "customer": "a1", "metric": "builds"}]})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, credits) = app.get("/v1/customers/a1/credits").await;
    let consume = credits["ledger"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "consume")
        .cloned()
        .unwrap();
    assert_eq!(consume["actor"], app_id.as_str());

    let (s, log) = app.get("/v1/audit").await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let rows = log["data"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
                r["target"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("flag_override.deleted", env.as_str(), "flag_override"),
            ("flag_override.created", env.as_str(), "flag_override"),
            ("credits.grant", env.as_str(), "credit_entry"),
            ("subscription.updated", env.as_str(), "subscription"),
            ("subscription.created", env.as_str(), "subscription"),
            ("customer.updated", env.as_str(), "customer"),
            ("customer.created", app_id.as_str(), "customer"),
        ]
    );
    assert_eq!(log["has_more"], false);
    for r in rows {
        assert_eq!(r["customer"], "a1");
        assert!(r["id"].as_str().unwrap().starts_with("aud_"));
    }
    let created = &rows[6];
    assert_eq!(created["before"], Value::Null);
    assert_eq!(created["after"]["name"], "A");
    assert_eq!(created["idempotency_key"], "signup-a1");
    assert_eq!(created["target"]["id"], "a1");
    assert_eq!(rows[5]["before"]["name"], "A");
    assert_eq!(rows[5]["after"]["name"], "B");
    assert_eq!(rows[3]["before"]["plan"], "pro");
    assert_eq!(rows[3]["after"]["plan"], "free");
    // The free plan's 100 monthly credits came first (a system grant, not audited).
    assert_eq!(rows[2]["before"]["balance"], "100");
    assert_eq!(rows[2]["after"]["balance"], "110");
    assert_eq!(rows[2]["after"]["reason"], "welcome");
    assert_eq!(rows[2]["idempotency_key"], "g1");
    assert_eq!(rows[1]["target"]["id"], "a1/off");
    assert_eq!(rows[1]["after"]["enabled"], true);
    assert_eq!(rows[0]["after"], Value::Null);

    // Filters and pages.
    let (_, by_app) = app.get(&format!("/v1/audit?actor={app_id}")).await;
    assert_eq!(by_app["data"].as_array().unwrap().len(), 1);
    let (_, page1) = app.get("/v1/audit?customer=a1&limit=4").await;
    assert_eq!(page1["data"].as_array().unwrap().len(), 4);
    assert_eq!(page1["has_more"], true);
    let last = page1["data"][3]["id"].as_str().unwrap();
    let (_, page2) = app
        .get(&format!(
            "/v1/audit?customer=a1&limit=4&starting_after={last}"
        ))
        .await;
    let ids: Vec<&Value> = page2["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&rows[4]["id"], &rows[5]["id"], &rows[6]["id"]]);
    assert_eq!(page2["has_more"], false);
    let (_, none) = app.get("/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(none["data"], json!([]));
    let (s, b) = app.get("/v1/audit?since=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["param"], "since");
    let (s, b) = app.get("/v1/audit?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "invalid_limit");
    app.server.shutdown().await.unwrap();
}

/// Secrets that Tally cannot have generated are refused without a database lookup; a
/// well-formed unknown one costs one lookup.
async fn malformed_keys_never_reach_the_store(db: Db) {
    let Some(app) = app(db).await else { return };
    let lookups = || app.server.state().key_lookups.load(Ordering::Relaxed);
    let (_, good) = app.key(Scope::Read, None).await;
    let wrong_prefix = good.replacen("tly_", "tlx_", 1);
    let too_long = format!("{good}0");
    let upper = good.to_uppercase();
    let spaces = " ".repeat(20);
    for bad in [
        "wrong-key-wrong-key",
        &wrong_prefix,
        &too_long,
        &good[..good.len() - 1],
        &upper,
        &spaces,
    ] {
        let (s, b) = app.call(bad, Method::GET, "/v1/plans", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad:?}");
        assert_eq!(b["error"]["code"], "invalid_api_key");
    }
    assert_eq!(lookups(), 0);
    let unknown = format!("tly_{}", "0".repeat(48));
    let (s, _) = app
        .call(&unknown, Method::GET, "/v1/plans", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(lookups(), 1);
    // A stored key is looked up once, then served from the cache.
    for _ in 0..3 {
        let (s, _) = app.call(&good, Method::GET, "/v1/plans", None, None).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(lookups(), 2);
    // The env key never needs the database.
    let (s, _) = app.get("/v1/plans").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(lookups(), 2);
    app.server.shutdown().await.unwrap();
}

on_both_backends!(
    every_route_answers_every_scope_as_documented,
    the_audit_log_has_one_row_per_mutation,
    malformed_keys_never_reach_the_store,
);

#[tokio::test]
async fn an_env_key_of_twenty_spaces_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    for bad in [
        " ".repeat(20),
        "short-key".to_owned(),
        format!("{} {}", "a".repeat(20), "b".repeat(20)),
    ] {
        let mut config = tally_server::Config::new(url.clone()).unwrap();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_key = Some(bad.clone());
        let err = match tally_server::spawn(config).await {
            Ok(_) => panic!("{bad:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("TALLY_API_KEY must be"), "{bad:?}: {err}");
    }
}

#[tokio::test]
async fn an_admin_key_cannot_be_limited_to_a_customer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    let store = tally_store::connect(&url).await.unwrap();
    let err = keys::create(
        &*store,
        "x",
        Scope::Admin,
        Some("c1"),
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, keys::CreateKeyError::AdminForOneCustomer));
    assert!(store.list_api_keys().await.unwrap().is_empty());
    store.close().await;
}
