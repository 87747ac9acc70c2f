//! Runs the built `tally` binary and checks its exact output and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn tally(args: &[&str]) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn catalog_check_summarises_a_valid_catalog() {
    let o = tally(&["catalog", "check", "catalogs/magicbox.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "catalogs/magicbox.toml: ok (Magic Box: 3 plans, 3 metrics, 0 credit packs, 2 coupons, 0 flags)\n"
    );
    for (file, summary) in [
        (
            "catalogs/localboxs.toml",
            "LocalBoxs: 4 plans, 1 metric, 4 credit packs, 0 coupons, 1 flag",
        ),
        (
            "catalogs/devflowhub.toml",
            "DevFlowHub: 4 plans, 7 metrics, 0 credit packs, 0 coupons, 1 flag",
        ),
    ] {
        let o = tally(&["catalog", "check", file]);
        assert_eq!(o.status.code(), Some(0));
        assert_eq!(stdout(&o), format!("{file}: ok ({summary})\n"));
    }
}

#[test]
fn catalog_check_lists_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[catalog]\nname = \"Bad\"\ncurrency = \"eur\"\n\n\
         [plans.pro]\nprices.month = { amount = \"-1.00\" }\n\n\
         [plans.pro.metrics.compute]\nincluded = 10\n",
    )
    .unwrap();
    let file = path.display().to_string();
    let o = tally(&["catalog", "check", &file]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "{file}:6:27: price must not be negative (-1.00)\n\
             {file}:8:20: plan pro refers to unknown metric \"compute\"\n\
             {file}: 2 errors\n"
        )
    );
}

#[test]
fn catalog_check_lists_errors_of_every_kind_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[catalog]
name = "Bad"
currency = "eur"
free_plan = "pro"

[metrics.calls]
unit = "call"

[plans.pro]
currency = "eux"
prices.month = { amount = "-1.00", lookup_key = "k" }
prices.year = { amount = "10.00", lookup_key = "k" }

[plans.pro.metrics.calls]
overage = { model = "graduated", tiers = [
  { up_to = 500, unit_price = "0.01" },
  { up_to = 100, unit_price = "0.02" },
  { unit_price = "0.03" },
] }

[plans.pro.metrics.cals]
included = 5

[coupons.X]
percent_off = 150
duration = "once"
plans = ["gold"]
"#,
    )
    .unwrap();
    let file = path.display().to_string();
    let o = tally(&["catalog", "check", &file]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "{file}:4:13: free_plan \"pro\" has a price (year EUR 10.00); the plan customers fall back to must not charge\n\
             {file}:10:12: unknown currency \"eux\"\n\
             {file}:11:27: price must not be negative (-1.00)\n\
             {file}:12:48: duplicate lookup_key \"k\": already used by plan pro (month)\n\
             {file}:17:13: tiers out of order: up_to 100 must be greater than the previous tier's 500\n\
             {file}:21:20: plan pro refers to unknown metric \"cals\"\n\
             {file}:25:15: percent_off must be more than 0 and at most 100 (150)\n\
             {file}:27:10: coupon X refers to unknown plan \"gold\"\n\
             {file}: 8 errors\n"
        )
    );
}

#[test]
fn catalog_check_reports_an_unreadable_file() {
    let o = tally(&["catalog", "check", "catalogs/nope.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("error: cannot read catalogs/nope.toml: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn catalog_show_prints_plans_prices_allowances_and_features() {
    let o = tally(&["catalog", "show", "catalogs/magicbox.toml"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "\
Magic Box (currency EUR, free plan: none)

Metrics
METRIC         NAME           UNIT  AGGREGATION  KIND     CREDITS/UNIT
compute_hours  Compute hours  hour  sum          metered  -
api_spend      API spend      eur   sum          metered  -
vms            VMs            vm    latest       gauge    -

Plans
PLAN        NAME           MONTHLY       YEARLY  TRIAL  CREDITS/MONTH  MINIMUM
starter     Starter      EUR 99.00   EUR 990.00  -      -              -
pro         Pro         EUR 199.00  EUR 1990.00  -      -              -
enterprise  Enterprise  EUR 499.00  EUR 4990.00  -      -              -

Allowances
PLAN        METRIC         INCLUDED   OVERAGE            LIMIT
starter     compute_hours  100 hour   EUR 0.05 per hour  -
starter     api_spend      EUR 50     cost + 20%         -
starter     vms            1 vm       -                  1 vm hard, warn at 80%/95%/100%
pro         compute_hours  300 hour   EUR 0.04 per hour  -
pro         api_spend      EUR 150    cost + 15%         -
pro         vms            3 vm       -                  3 vm hard, warn at 80%/95%/100%
enterprise  compute_hours  unlimited  -                  -
enterprise  api_spend      EUR 500    cost + 10%         -
enterprise  vms            unlimited  -                  -

Features
FEATURE           starter  pro  enterprise
email_support     yes      yes  yes
priority_support  no       yes  yes

Coupons
COUPON       DISCOUNT  DURATION  REDEEM BEFORE         MAX  PLANS
EARLYBIRD30  30% off   forever   -                     -    all
LAUNCH2025   20% off   once      2026-01-01 00:00 UTC  100  all
"
    );
}

#[test]
fn catalog_show_keeps_the_seconds_of_a_redeem_by_instant() {
    // Redeemable strictly before 23:59:59: "before 23:59" would be a minute early.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[catalog]\nname = \"C\"\ncurrency = \"eur\"\n[plans.p]\n\
         [coupons.A]\npercent_off = 5\nduration = \"once\"\nredeem_by = 2025-12-31T23:59:59Z\n\
         [coupons.B]\npercent_off = 5\nduration = \"once\"\nredeem_by = 2025-12-31\n",
    )
    .unwrap();
    let o = tally(&["catalog", "show", &path.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with(
            "\nCoupons\n\
             COUPON  DISCOUNT  DURATION  REDEEM BEFORE            MAX  PLANS\n\
             A       5% off    once      2025-12-31 23:59:59 UTC  -    all\n\
             B       5% off    once      2026-01-01 00:00 UTC     -    all\n"
        ),
        "{}",
        stdout(&o)
    );
}

#[test]
fn catalog_show_lists_packs_and_flags() {
    let o = tally(&["catalog", "show", "catalogs/localboxs.toml"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains(
        "\nCredit packs\n\
         PACK           NAME            CREDITS      PRICE  LOOKUP KEY\n\
         credits_500    500 credits         500   USD 0.50  localboxs_credits_500\n"
    ));
    assert!(out.contains(
        "\nFlags\nFLAG            ENABLED  ROLLOUT  ENVIRONMENTS\nstripe_billing  yes      100%     all\n"
    ));
}

const PREVIEW: &[&str] = &[
    "invoice",
    "preview",
    "--catalog",
    "catalogs/magicbox.toml",
    "--plan",
    "pro",
    "--usage",
    "compute_hours=350",
    "--usage",
    "api_spend=180",
];

#[test]
fn invoice_preview_json_is_the_seed_example() {
    let mut args = PREVIEW.to_vec();
    args.push("--json");
    let o = tally(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "currency": "eur",
            "plan": "pro",
            "interval": "month",
            "lines": [
                {"kind": "base", "description": "Pro plan (monthly)", "quantity": "1", "amount": 19900},
                {"kind": "usage", "metric": "compute_hours",
                 "description": "Compute hours: 50 hour beyond 300 included, at EUR 0.04 per hour",
                 "quantity": "50", "amount": 200},
                {"kind": "usage", "metric": "api_spend",
                 "description": "API spend: EUR 30 beyond EUR 150 included, plus 15% markup",
                 "quantity": "30", "amount": 3450}
            ],
            "subtotal": 23550,
            "discount": 0,
            "total": 23550
        })
    );
}

#[test]
fn invoice_preview_text() {
    let mut args = PREVIEW.to_vec();
    args.extend(["--coupon", "EARLYBIRD30"]);
    let o = tally(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "\
Pro (pro), monthly, EUR

KIND      DESCRIPTION                                                       QUANTITY      AMOUNT
base      Pro plan (monthly)                                                       1      199.00
usage     Compute hours: 50 hour beyond 300 included, at EUR 0.04 per hour        50        2.00
usage     API spend: EUR 30 beyond EUR 150 included, plus 15% markup              30       34.50

subtotal                                                                              EUR 235.50
discount                                                                              EUR -70.65
total                                                                                 EUR 164.85
"
    );
}

#[test]
fn invoice_preview_of_an_annual_plan_month_without_base() {
    let o = tally(&[
        "invoice",
        "preview",
        "--catalog",
        "catalogs/magicbox.toml",
        "--plan",
        "starter",
        "--interval",
        "year",
        "--without-base",
        "--usage",
        "compute_hours=101",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["interval"], "year");
    assert_eq!(json["lines"].as_array().unwrap().len(), 2);
    assert_eq!(json["lines"][0]["metric"], "compute_hours");
    assert_eq!(json["lines"][0]["quantity"], "1");
    assert_eq!(json["lines"][0]["amount"], 5);
    assert_eq!(json["lines"][1]["metric"], "api_spend");
    assert_eq!(json["lines"][1]["amount"], 0);
    assert_eq!(json["total"], 5);
}

#[test]
fn invoice_preview_explains_mistakes() {
    let o = tally(&[
        "invoice",
        "preview",
        "--catalog",
        "catalogs/magicbox.toml",
        "--plan",
        "gold",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: no plan \"gold\" in catalogs/magicbox.toml (plans: starter, pro, enterprise)\n"
    );

    let o = tally(&[
        "invoice",
        "preview",
        "--catalog",
        "catalogs/magicbox.toml",
        "--plan",
        "pro",
        "--usage",
        "gpu_hours=3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: no metric \"gpu_hours\" in catalogs/magicbox.toml (metrics: compute_hours, api_spend, vms)\n"
    );

    let o = tally(&[
        "invoice",
        "preview",
        "--catalog",
        "catalogs/magicbox.toml",
        "--plan",
        "pro",
        "--usage",
        "compute_hours=-3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: usage of compute_hours must not be negative (-3)\n"
    );

    let o = tally(&[
        "invoice",
        "preview",
        "--catalog",
        "catalogs/magicbox.toml",
        "--plan",
        "pro",
        "--coupon",
        "FREE",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: no coupon \"FREE\" in catalogs/magicbox.toml\n"
    );

    let o = tally(&[
        "invoice",
        "preview",
        "--catalog",
        "catalogs/magicbox.toml",
        "--plan",
        "pro",
        "--usage",
        "compute_hours=1.5e3",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "\"1.5e3\" is not a decimal number (digits, an optional leading - and .digits; \
             no +, _, spaces or exponent)"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn keys_have_scopes_and_every_key_change_is_audited_as_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let o = tally(&[
        "keys",
        "create",
        "--name",
        "shop",
        "--scope",
        "app",
        "--customer",
        "c1",
        "--database-url",
        &db,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let secret = stdout(&o);
    assert_eq!(secret.trim().len(), 52);
    assert!(secret.starts_with("tly_"));
    assert!(
        stderr(&o).contains("scope app, customer c1"),
        "{}",
        stderr(&o)
    );

    let o = tally(&[
        "keys",
        "create",
        "--scope",
        "admin",
        "--customer",
        "c1",
        "--database-url",
        &db,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("an admin key cannot be limited to one customer"));
    let o = tally(&["keys", "create", "--scope", "owner", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("\"owner\" is not a scope: use admin, app or read"));

    let o = tally(&["keys", "list", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(0));
    let list = stdout(&o);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "NAME", "SCOPE", "CUSTOMER", "CREATED", "REVOKED"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[1..4], ["shop", "app", "c1"]);
    let id = row[0].to_owned();

    let o = tally(&["keys", "revoke", &id, "--database-url", &db]);
    assert_eq!(o.status.code(), Some(0));
    let o = tally(&["keys", "revoke", &id, "--database-url", &db]);
    assert_eq!(o.status.code(), Some(1));

    let o = tally(&["audit", "--json", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = rows.as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor"].as_str().unwrap(),
                r["target"]["id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("api_key.revoked", "cli", id.as_str()),
            ("api_key.created", "cli", id.as_str())
        ]
    );
    assert_eq!(rows[0]["customer"], "c1");
    assert_eq!(rows[0]["before"]["revoked_at"], serde_json::Value::Null);
    assert!(rows[0]["after"]["revoked_at"].is_string());

    let o = tally(&[
        "audit",
        "--actor",
        "cli",
        "--customer",
        "c1",
        "--database-url",
        &db,
    ]);
    assert_eq!(o.status.code(), Some(0));
    let table = stdout(&o);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("api_key.revoked"));
    let o = tally(&["audit", "--customer", "c2", "--database-url", &db]);
    assert_eq!(stdout(&o).lines().count(), 1);
    let o = tally(&["audit", "--since", "yesterday", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--since \"yesterday\" is not an RFC 3339 instant"));
}

#[test]
fn topups_set_show_and_off_on_the_database_audited_as_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tally.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = tally_store::connect_admin(&db).await.unwrap();
        store
            .upsert_customer(tally_store::CustomerUpsert {
                id: "c1".into(),
                email: None,
                name: None,
                metadata: None,
                email_opt_out: None,
                now: chrono::Utc::now(),
            })
            .await
            .unwrap();
        store.close().await;
    });
    let set = |pack: &str, threshold: &str| {
        tally(&[
            "topups",
            "set",
            "c1",
            "--threshold",
            threshold,
            "--pack",
            pack,
            "--max-per-month",
            "3",
            "--catalog",
            "catalogs/localboxs.toml",
            "--database-url",
            &db,
        ])
    };
    let o = set("credits_500", "50");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "c1: below 50 credits buy credits_500, at most 3 a month\n"
    );
    let o = set("credits_9", "50");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the catalog has no credit pack \"credits_9\""),
        "{}",
        stderr(&o)
    );
    let o = set("credits_500", "0");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("threshold must be positive"));

    let o = tally(&["topups", "show", "c1", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.starts_with(
            "c1: below 50 credits buy credits_500, at most 3 a month; declines in a row: 0\n"
        ),
        "{text}"
    );
    let o = tally(&["topups", "show", "c1", "--json", "--database-url", &db]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["settings"]["max_per_month"], 3);
    assert_eq!(v["recent"], serde_json::json!([]));

    let o = tally(&["topups", "off", "c1", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = tally(&["topups", "off", "c1", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(1));
    let o = tally(&["topups", "show", "c1", "--database-url", &db]);
    assert_eq!(o.status.code(), Some(1));

    let o = tally(&["audit", "--json", "--database-url", &db]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let actions: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("auto_top_up.deleted", "cli"),
            ("auto_top_up.updated", "cli")
        ]
    );
}
