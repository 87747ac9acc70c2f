//! Validation: turns the raw file into a [`Catalog`], collecting every error with its location.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use toml::Spanned;

use super::error::{CatalogErrors, Locator};
use super::raw::*;
use super::*;
use crate::money::Currency;
use crate::period::Interval;

/// Default notification thresholds, in percent of a limit.
pub(crate) const DEFAULT_WARN_AT_PERCENT: [u32; 3] = [80, 95, 100];

pub(super) fn parse(src: &str, file: &str) -> Result<Catalog, CatalogErrors> {
    let loc = Locator::new(src, file);
    let raw: RawCatalog = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        if e.message() == FLOAT_MESSAGE || e.message().starts_with("invalid type: floating point") {
            // The reading stops at the first float it meets; list them all, in file order.
            let floats = float_errors(src);
            if !floats.is_empty() {
                return CatalogErrors(
                    floats
                        .into_iter()
                        .map(|(offset, message)| loc.error(offset, message))
                        .collect(),
                );
            }
        }
        let mut message = toml_message(e.message());
        if message == "duplicate key" {
            if let Some(key) = src.get(span.clone()) {
                message = format!("duplicate key {key}: it is already defined above");
            }
        }
        CatalogErrors(vec![loc.error(span.start, message)])
    })?;
    let mut b = Builder {
        loc,
        errors: Vec::new(),
        lookup_keys: HashMap::new(),
        coupon_ids: HashMap::new(),
    };
    let catalog = b.catalog(raw);
    if b.errors.is_empty() {
        Ok(catalog)
    } else {
        b.errors.sort_by_key(|(offset, _)| *offset);
        Err(CatalogErrors(
            b.errors.into_iter().map(|(_, e)| e).collect(),
        ))
    }
}

/// Every TOML float in `src` with its byte offset and the message for it, in file order.
fn float_errors(src: &str) -> Vec<(usize, String)> {
    /// Keys that take whole numbers only, where a string would not do either.
    const WHOLE: [&str; 4] = [
        "trial_days",
        "duration_in_months",
        "max_redemptions",
        "warn_at_percent",
    ];
    fn walk(key: &str, value: &Spanned<toml::de::DeValue<'_>>, out: &mut Vec<(usize, String)>) {
        match value.get_ref() {
            toml::de::DeValue::Float(_) => {
                let message = if WHOLE.contains(&key) {
                    format!("{key} must be a whole number")
                } else {
                    FLOAT_MESSAGE.to_string()
                };
                out.push((value.span().start, message));
            }
            toml::de::DeValue::Array(items) => items.iter().for_each(|v| walk(key, v, out)),
            toml::de::DeValue::Table(table) => {
                table.iter().for_each(|(k, v)| walk(k.get_ref(), v, out))
            }
            _ => {}
        }
    }
    let Ok(doc) = toml::de::DeTable::parse(src) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    doc.get_ref()
        .iter()
        .for_each(|(k, v)| walk(k.get_ref(), v, &mut out));
    out.sort_unstable();
    out
}

/// toml's messages can span lines and name internal types; a catalog error is one plain line.
fn toml_message(message: &str) -> String {
    const SHAPES: [(&str, &str); 11] = [
        (
            "struct RawPrice",
            "a table like { amount = \"9.00\", lookup_key = \"…\" }",
        ),
        (
            "struct RawCharge",
            "a table like { model = \"per_unit\", unit_price = \"0.04\" }",
        ),
        (
            "struct RawLimit",
            "a table like { quantity = 10, enforcement = \"hard\" }",
        ),
        (
            "struct RawTier",
            "a tier like { up_to = 100, unit_price = \"0.01\" }",
        ),
        ("struct RawPlanMetric", "a table"),
        ("struct RawCreditPack", "a table"),
        ("struct RawCoupon", "a table"),
        ("struct RawMetric", "a table"),
        ("struct RawHeader", "a table"),
        ("struct RawPlan", "a table"),
        ("struct RawFlag", "a table"),
    ];
    let mut one_line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    for (internal, plain) in SHAPES {
        one_line = one_line.replace(internal, plain);
    }
    if one_line == "missing field `catalog`" {
        return "missing the [catalog] table with name and currency".to_string();
    }
    match one_line.strip_prefix("missing field ") {
        Some(field) => format!("missing {field}"),
        None => one_line,
    }
}

struct Builder<'a> {
    loc: Locator<'a>,
    errors: Vec<(usize, CatalogError)>,
    /// Stripe lookup keys seen so far, with what uses them.
    lookup_keys: HashMap<String, String>,
    /// Coupon ids seen so far, lowercased, with their spelling: customers type coupon codes, so
    /// two that differ only in letter case would be confused.
    coupon_ids: HashMap<String, String>,
}

/// Entries of a TOML table in file order.
fn in_file_order<T>(map: Map<T>) -> Vec<(Spanned<String>, Spanned<T>)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

impl Builder<'_> {
    fn err(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let e = self.loc.error(span.start, message);
        self.errors.push((span.start, e));
    }

    fn id(&mut self, what: &str, key: &Spanned<String>) {
        let id = key.get_ref();
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            self.err(
                &key.span(),
                format!("{what} id \"{id}\" must be 1 to 64 letters, digits, '_', '-' or '.'"),
            );
        }
    }

    fn currency(&mut self, s: &Spanned<String>) -> Option<Currency> {
        match Currency::parse(s.get_ref()) {
            Ok(c) => Some(c),
            Err(e) => {
                self.err(&s.span(), e.to_string());
                None
            }
        }
    }

    /// A non-negative fixed amount, exact to the currency's minor unit.
    fn amount(&mut self, what: &str, n: &Spanned<Num>, currency: Currency) -> Option<i64> {
        let v = n.get_ref().0;
        if v.is_sign_negative() && !v.is_zero() {
            self.err(&n.span(), format!("{what} must not be negative ({v})"));
            return None;
        }
        match currency.exact_minor(v) {
            Ok(minor) => Some(minor),
            Err(e) => {
                self.err(&n.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    fn non_negative(&mut self, what: &str, n: &Spanned<Num>) -> Option<Decimal> {
        let v = n.get_ref().0;
        if v.is_sign_negative() && !v.is_zero() {
            self.err(&n.span(), format!("{what} must not be negative ({v})"));
            None
        } else {
            Some(v)
        }
    }

    fn positive(&mut self, what: &str, n: &Spanned<Num>) -> Option<Decimal> {
        let v = n.get_ref().0;
        if v <= Decimal::ZERO {
            self.err(&n.span(), format!("{what} must be more than 0 ({v})"));
            None
        } else {
            Some(v)
        }
    }

    fn lookup_key(&mut self, key: &Spanned<String>, user: String) {
        if key.get_ref().trim().is_empty() {
            self.err(&key.span(), "lookup_key must not be empty");
            return;
        }
        if let Some(previous) = self.lookup_keys.get(key.get_ref()) {
            let message = format!(
                "duplicate lookup_key \"{}\": already used by {previous}",
                key.get_ref()
            );
            self.err(&key.span(), message);
        } else {
            self.lookup_keys.insert(key.get_ref().clone(), user);
        }
    }

    fn catalog(&mut self, raw: RawCatalog) -> Catalog {
        let header_span = raw.catalog.span();
        let header = raw.catalog.into_inner();
        if header.name.get_ref().trim().is_empty() {
            self.err(&header.name.span(), "catalog name must not be empty");
        }
        let currency = self.currency(&header.currency).unwrap_or(Currency::EUR);
        let stripe_usage = match header.stripe_usage {
            None => StripeUsage::InvoiceItems,
            Some(s) => match StripeUsage::parse(s.get_ref()) {
                Some(u) => u,
                None => {
                    self.err(
                        &s.span(),
                        format!(
                            "stripe_usage must be \"invoice_items\" or \"meters\", not \"{}\"",
                            s.get_ref()
                        ),
                    );
                    StripeUsage::InvoiceItems
                }
            },
        };

        let metrics: Vec<Metric> = in_file_order(raw.metrics)
            .into_iter()
            .map(|(k, v)| self.metric(k, v))
            .collect();
        let metric_index: BTreeMap<String, Metric> =
            metrics.iter().map(|m| (m.id.clone(), m.clone())).collect();

        let plans: Vec<Plan> = in_file_order(raw.plans)
            .into_iter()
            .map(|(k, v)| self.plan(k, v, currency, &metric_index))
            .collect();

        let free_plan = header.free_plan.map(|f| {
            match plans.iter().find(|p| &p.id == f.get_ref()) {
                None => self.err(
                    &f.span(),
                    format!(
                        "free_plan \"{}\" is not a plan in this catalog",
                        f.get_ref()
                    ),
                ),
                // Customers land here when their subscription is deleted: it must not bill them.
                Some(plan) => {
                    let code = plan.currency.code().to_ascii_uppercase();
                    let charge = plan
                        .prices
                        .iter()
                        .find(|(_, p)| p.amount != 0)
                        .map(|(interval, p)| {
                            format!(
                                "a price ({interval} {code} {})",
                                plan.currency.format_minor(p.amount)
                            )
                        })
                        .or_else(|| {
                            plan.minimum.filter(|m| *m != 0).map(|m| {
                                format!(
                                    "a minimum charge ({code} {})",
                                    plan.currency.format_minor(m)
                                )
                            })
                        })
                        .or_else(|| {
                            plan.metrics_in_order()
                                .into_iter()
                                .find(|(_, pm)| pm.overage.is_some())
                                .map(|(id, _)| format!("an overage charge for {id}"))
                        });
                    if let Some(charge) = charge {
                        self.err(
                            &f.span(),
                            format!(
                                "free_plan \"{}\" has {charge}; the plan customers fall back to \
                                 must not charge",
                                f.get_ref()
                            ),
                        );
                    }
                }
            }
            f.into_inner()
        });
        if plans.is_empty() {
            self.err(
                &header_span,
                "the catalog declares no plans; add a [plans.<id>] table",
            );
        }

        let credit_packs = in_file_order(raw.credit_packs)
            .into_iter()
            .map(|(k, v)| self.credit_pack(k, v, currency))
            .collect();
        let plan_ids: Vec<(&str, Currency)> =
            plans.iter().map(|p| (p.id.as_str(), p.currency)).collect();
        let coupons = in_file_order(raw.coupons)
            .into_iter()
            .map(|(k, v)| self.coupon(k, v, currency, &plan_ids))
            .collect();
        let flags = in_file_order(raw.flags)
            .into_iter()
            .map(|(k, v)| self.flag(k, v))
            .collect();

        Catalog {
            name: header.name.into_inner(),
            currency,
            free_plan,
            stripe_usage,
            metrics,
            plans,
            credit_packs,
            coupons,
            flags,
        }
    }

    fn metric(&mut self, key: Spanned<String>, raw: Spanned<RawMetric>) -> Metric {
        self.id("metric", &key);
        let id = key.into_inner();
        let span = raw.span();
        let raw = raw.into_inner();
        let unit = match raw.unit {
            Some(u) => u.into_inner(),
            None => {
                self.err(
                    &span,
                    format!("metric {id} needs a unit, e.g. unit = \"hour\""),
                );
                String::new()
            }
        };
        let aggregation = match raw.aggregation {
            None => Aggregation::Sum,
            Some(a) => match a.get_ref().as_str() {
                "sum" => Aggregation::Sum,
                "count" => Aggregation::Count,
                "max" => Aggregation::Max,
                "latest" => Aggregation::Latest,
                "unique_count" => Aggregation::UniqueCount,
                other => {
                    let message = format!(
                        "unknown aggregation \"{other}\"; expected sum, count, max, latest or \
                         unique_count"
                    );
                    self.err(&a.span(), message);
                    Aggregation::Sum
                }
            },
        };
        let kind = match raw.kind {
            None => MetricKind::Metered,
            Some(k) => match k.get_ref().as_str() {
                "metered" => MetricKind::Metered,
                "gauge" => MetricKind::Gauge,
                other => {
                    let message =
                        format!("unknown metric kind \"{other}\"; expected metered or gauge");
                    self.err(&k.span(), message);
                    MetricKind::Metered
                }
            },
        };
        let unique_property = match (aggregation, raw.unique_property) {
            (Aggregation::UniqueCount, Some(p)) if !p.get_ref().trim().is_empty() => {
                Some(p.into_inner())
            }
            (Aggregation::UniqueCount, _) => {
                self.err(
                    &span,
                    format!(
                        "metric {id} counts unique values, so it needs unique_property = \
                         \"<event property>\""
                    ),
                );
                None
            }
            (_, Some(p)) => {
                self.err(
                    &p.span(),
                    "unique_property only applies to aggregation = \"unique_count\"",
                );
                None
            }
            (_, None) => None,
        };
        let credit_cost = raw
            .credit_cost
            .and_then(|c| self.positive("credit_cost", &c));
        Metric {
            name: raw.name.map_or_else(|| id.clone(), Spanned::into_inner),
            id,
            unit,
            aggregation,
            kind,
            allow_negative: raw.allow_negative,
            unique_property,
            credit_cost,
        }
    }

    fn plan(
        &mut self,
        key: Spanned<String>,
        raw: Spanned<RawPlan>,
        default_currency: Currency,
        metrics: &BTreeMap<String, Metric>,
    ) -> Plan {
        self.id("plan", &key);
        let id = key.into_inner();
        let raw = raw.into_inner();
        let currency = raw
            .currency
            .as_ref()
            .and_then(|c| self.currency(c))
            .unwrap_or(default_currency);

        let mut prices = BTreeMap::new();
        for (interval_key, price) in in_file_order(raw.prices) {
            let Some(interval) = Interval::parse(interval_key.get_ref()) else {
                let message = format!(
                    "unknown interval \"{}\"; expected month or year",
                    interval_key.get_ref()
                );
                self.err(&interval_key.span(), message);
                continue;
            };
            let price = price.into_inner();
            let amount = self.amount("price", &price.amount, currency);
            let lookup_key = match price.lookup_key {
                Some(k) => {
                    self.lookup_key(&k, format!("plan {id} ({interval})"));
                    k.into_inner()
                }
                None => {
                    let generated = format!("{id}_{}", interval.adjective());
                    let span = price.amount.span();
                    self.lookup_key(
                        &Spanned::new(span, generated.clone()),
                        format!("plan {id} ({interval})"),
                    );
                    generated
                }
            };
            if let Some(amount) = amount {
                prices.insert(interval, Price { amount, lookup_key });
            }
        }

        let trial_days = match raw.trial_days {
            None => 0,
            Some(t) => match u32::try_from(*t.get_ref()) {
                Ok(d) if d <= 730 => d,
                _ => {
                    self.err(&t.span(), "trial_days must be between 0 and 730");
                    0
                }
            },
        };

        let mut plan_metrics = BTreeMap::new();
        for (position, (metric_key, pm)) in in_file_order(raw.metrics).into_iter().enumerate() {
            let Some(metric) = metrics.get(metric_key.get_ref()) else {
                let message = format!(
                    "plan {id} refers to unknown metric \"{}\"",
                    metric_key.get_ref()
                );
                self.err(&metric_key.span(), message);
                continue;
            };
            if let Some(pm) = self.plan_metric(&id, metric, pm, currency, position) {
                plan_metrics.insert(metric.id.clone(), pm);
            }
        }

        let mut features = BTreeMap::new();
        for (name, value) in in_file_order(raw.features) {
            self.id("feature", &name);
            let value = match value.into_inner() {
                RawFeature::Bool(b) => FeatureValue::Bool(b),
                RawFeature::Number(n) => FeatureValue::Number(n),
            };
            features.insert(name.into_inner(), value);
        }

        let monthly_credits = raw
            .monthly_credits
            .and_then(|c| self.positive("monthly_credits", &c));
        let low_credit_balance = raw
            .low_credit_balance
            .and_then(|c| self.positive("low_credit_balance", &c));
        let minimum = raw
            .minimum
            .and_then(|m| self.amount("minimum", &m, currency));

        Plan {
            name: raw.name.map_or_else(|| id.clone(), Spanned::into_inner),
            id,
            currency,
            prices,
            trial_days,
            metrics: plan_metrics,
            features,
            monthly_credits,
            credits_roll_over: raw.credits_roll_over,
            low_credit_balance,
            minimum,
        }
    }

    fn plan_metric(
        &mut self,
        plan: &str,
        metric: &Metric,
        raw: Spanned<RawPlanMetric>,
        currency: Currency,
        position: usize,
    ) -> Option<PlanMetric> {
        let raw = raw.into_inner();
        let mut ok = true;
        let included = match &raw.included {
            None => Allowance::Quantity(Decimal::ZERO),
            Some(a) => match a.get_ref() {
                RawAllowance::Unlimited => Allowance::Unlimited,
                RawAllowance::Quantity(q) if q.is_sign_negative() && !q.is_zero() => {
                    self.err(
                        &a.span(),
                        format!("included quantity must not be negative ({q})"),
                    );
                    ok = false;
                    Allowance::Quantity(Decimal::ZERO)
                }
                RawAllowance::Quantity(q) => Allowance::Quantity(*q),
            },
        };
        let overage = match raw.overage {
            None => None,
            Some(c) => {
                if included == Allowance::Unlimited {
                    self.err(
                        &c.span(),
                        format!(
                            "plan {plan} includes unlimited {}, so an overage charge never applies",
                            metric.id
                        ),
                    );
                    ok = false;
                }
                let charge = self.charge(metric, c, currency);
                ok &= charge.is_some();
                charge
            }
        };
        let limit = match raw.limit {
            None => None,
            Some(l) => {
                let span = l.span();
                let l = l.into_inner();
                let quantity = self.non_negative("limit quantity", &l.quantity);
                let enforcement = match &l.enforcement {
                    None => Some(Enforcement::Hard),
                    Some(e) => match e.get_ref().as_str() {
                        "hard" => Some(Enforcement::Hard),
                        "soft" => Some(Enforcement::Soft),
                        other => {
                            let message =
                                format!("unknown enforcement \"{other}\"; expected hard or soft");
                            self.err(&e.span(), message);
                            None
                        }
                    },
                };
                match (included, quantity) {
                    (Allowance::Unlimited, _) => {
                        self.err(
                            &span,
                            format!(
                                "plan {plan} includes unlimited {}, so it cannot also limit it",
                                metric.id
                            ),
                        );
                        None
                    }
                    (Allowance::Quantity(inc), Some(q)) if q < inc => {
                        self.err(
                            &l.quantity.span(),
                            format!("limit {q} is below the included quantity {inc}"),
                        );
                        None
                    }
                    // A soft limit lets usage through and bills it as overage: without an
                    // overage charge, usage beyond it would be free.
                    (_, Some(_)) if enforcement == Some(Enforcement::Soft) && overage.is_none() => {
                        self.err(
                            &span,
                            format!(
                                "plan {plan} limits {} softly, so usage beyond the limit is \
                                 billed: add an overage charge, or make the limit hard",
                                metric.id
                            ),
                        );
                        None
                    }
                    (_, Some(quantity)) => enforcement.map(|enforcement| Limit {
                        quantity,
                        enforcement,
                    }),
                    _ => None,
                }
                .or_else(|| {
                    ok = false;
                    None
                })
            }
        };
        let warn_at_percent = match raw.warn_at_percent {
            None => DEFAULT_WARN_AT_PERCENT.to_vec(),
            Some(list) => {
                let mut out: Vec<u32> = Vec::new();
                for p in list.into_inner() {
                    match u32::try_from(*p.get_ref()) {
                        Ok(v) if (1..=1000).contains(&v) => {
                            if out.last().is_some_and(|last| *last >= v) {
                                self.err(&p.span(), "warn_at_percent must be in increasing order");
                                ok = false;
                            }
                            out.push(v);
                        }
                        _ => {
                            self.err(
                                &p.span(),
                                "warn_at_percent values must be between 1 and 1000",
                            );
                            ok = false;
                        }
                    }
                }
                out
            }
        };
        ok.then_some(PlanMetric {
            name: metric.name.clone(),
            unit: metric.unit.clone(),
            position,
            included,
            overage,
            limit,
            warn_at_percent,
        })
    }

    fn charge(
        &mut self,
        metric: &Metric,
        raw: Spanned<RawCharge>,
        currency: Currency,
    ) -> Option<Charge> {
        let raw = raw.into_inner();
        let model = raw.model.get_ref().as_str();
        let allowed: &[&str] = match model {
            "per_unit" => &["unit_price"],
            "graduated" | "volume" => &["tiers"],
            "package" => &["size", "price"],
            "pass_through" => &["markup_percent"],
            other => {
                let message = format!(
                    "unknown charge model \"{other}\"; expected per_unit, graduated, volume, \
                     package or pass_through"
                );
                self.err(&raw.model.span(), message);
                return None;
            }
        };
        let present: [(&str, Option<Range<usize>>); 5] = [
            ("unit_price", raw.unit_price.as_ref().map(Spanned::span)),
            ("tiers", raw.tiers.as_ref().map(Spanned::span)),
            ("size", raw.size.as_ref().map(Spanned::span)),
            ("price", raw.price.as_ref().map(Spanned::span)),
            (
                "markup_percent",
                raw.markup_percent.as_ref().map(Spanned::span),
            ),
        ];
        let mut ok = true;
        for (field, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&field) {
                    self.err(
                        &span,
                        format!("{field} does not apply to the {model} model"),
                    );
                    ok = false;
                }
            }
        }
        let model_span = raw.model.span();
        let missing = |b: &mut Self, field: &str| {
            b.err(&model_span, format!("the {model} model needs {field}"));
        };
        let charge = match model {
            "per_unit" => match &raw.unit_price {
                None => {
                    missing(self, "unit_price");
                    None
                }
                Some(p) => self
                    .non_negative("unit_price", p)
                    .map(|unit_price| Charge::PerUnit { unit_price }),
            },
            "graduated" | "volume" => match raw.tiers {
                None => {
                    missing(self, "tiers");
                    None
                }
                Some(tiers) => self.tiers(tiers, currency).map(|tiers| {
                    if model == "graduated" {
                        Charge::Graduated { tiers }
                    } else {
                        Charge::Volume { tiers }
                    }
                }),
            },
            "package" => match (&raw.size, &raw.price) {
                (Some(size), Some(price)) => {
                    let size = self.positive("package size", size);
                    let price = self
                        .amount("package price", price, currency)
                        .map(|_| price.get_ref().0);
                    size.zip(price)
                        .map(|(size, price)| Charge::Package { size, price })
                }
                (None, _) => {
                    missing(self, "size");
                    None
                }
                (_, None) => {
                    missing(self, "price");
                    None
                }
            },
            _ => {
                if !metric.unit.eq_ignore_ascii_case(currency.code()) {
                    self.err(
                        &model_span,
                        format!(
                            "metric {} is billed as pass-through cost, so its unit must be the \
                             plan's currency \"{}\", not \"{}\"",
                            metric.id,
                            currency.code(),
                            metric.unit
                        ),
                    );
                    ok = false;
                }
                let markup = match &raw.markup_percent {
                    None => Some(Decimal::ZERO),
                    Some(m) => self.non_negative("markup_percent", m),
                };
                markup.map(|markup| Charge::PassThrough { markup })
            }
        };
        charge.filter(|_| ok)
    }

    fn tiers(
        &mut self,
        raw: Spanned<Vec<Spanned<RawTier>>>,
        currency: Currency,
    ) -> Option<Vec<Tier>> {
        let list_span = raw.span();
        let raw = raw.into_inner();
        if raw.is_empty() {
            self.err(&list_span, "tiers must not be empty");
            return None;
        }
        let count = raw.len();
        let mut ok = true;
        let mut tiers = Vec::with_capacity(count);
        let mut previous: Option<Decimal> = None;
        for (i, t) in raw.into_iter().enumerate() {
            let span = t.span();
            let t = t.into_inner();
            let last = i + 1 == count;
            let bound = match &t.up_to {
                Some(u) => match u.get_ref() {
                    RawAllowance::Quantity(q) => Some((*q, u.span())),
                    RawAllowance::Unlimited => None,
                },
                None => None,
            };
            let up_to = match bound {
                None => {
                    if !last {
                        self.err(
                            &span,
                            "only the last tier may be unbounded; give this tier an up_to",
                        );
                        ok = false;
                    }
                    None
                }
                Some((q, q_span)) => {
                    if last {
                        self.err(
                            &q_span,
                            "the last tier must be unbounded: leave out up_to or write \
                             up_to = \"unlimited\"",
                        );
                        ok = false;
                    }
                    match previous {
                        Some(p) if q <= p => {
                            self.err(
                                &q_span,
                                format!(
                                    "tiers out of order: up_to {q} must be greater than the \
                                     previous tier's {p}"
                                ),
                            );
                            ok = false;
                        }
                        None if q <= Decimal::ZERO => {
                            self.err(&q_span, format!("up_to must be more than 0 ({q})"));
                            ok = false;
                        }
                        _ => {}
                    }
                    previous = Some(q);
                    Some(q)
                }
            };
            if t.unit_price.is_none() && t.flat.is_none() {
                self.err(&span, "a tier needs a unit_price, a flat amount, or both");
                ok = false;
            }
            let unit_price = match &t.unit_price {
                None => Decimal::ZERO,
                Some(p) => self.non_negative("unit_price", p).unwrap_or_else(|| {
                    ok = false;
                    Decimal::ZERO
                }),
            };
            let flat = match &t.flat {
                None => Decimal::ZERO,
                Some(f) => match self.amount("flat", f, currency) {
                    Some(_) => f.get_ref().0,
                    None => {
                        ok = false;
                        Decimal::ZERO
                    }
                },
            };
            tiers.push(Tier {
                up_to,
                unit_price,
                flat,
            });
        }
        ok.then_some(tiers)
    }

    fn credit_pack(
        &mut self,
        key: Spanned<String>,
        raw: Spanned<RawCreditPack>,
        default_currency: Currency,
    ) -> CreditPack {
        self.id("credit pack", &key);
        let id = key.into_inner();
        let raw = raw.into_inner();
        let currency = raw
            .currency
            .as_ref()
            .and_then(|c| self.currency(c))
            .unwrap_or(default_currency);
        let credits = self
            .positive("credits", &raw.credits)
            .unwrap_or(Decimal::ZERO);
        let price = raw.price.into_inner();
        let amount = self.amount("price", &price.amount, currency).unwrap_or(0);
        let lookup_key = match price.lookup_key {
            Some(k) => {
                self.lookup_key(&k, format!("credit pack {id}"));
                k.into_inner()
            }
            None => {
                self.lookup_key(
                    &Spanned::new(price.amount.span(), id.clone()),
                    format!("credit pack {id}"),
                );
                id.clone()
            }
        };
        CreditPack {
            name: raw.name.map_or_else(|| id.clone(), Spanned::into_inner),
            id,
            credits,
            currency,
            amount,
            lookup_key,
        }
    }

    fn coupon(
        &mut self,
        key: Spanned<String>,
        raw: Spanned<RawCoupon>,
        default_currency: Currency,
        plans: &[(&str, Currency)],
    ) -> Coupon {
        self.id("coupon", &key);
        let folded = key.get_ref().to_lowercase();
        if let Some(previous) = self.coupon_ids.get(&folded) {
            let message = format!(
                "coupon {} differs from coupon {previous} only in letter case",
                key.get_ref()
            );
            self.err(&key.span(), message);
        } else {
            self.coupon_ids.insert(folded, key.get_ref().clone());
        }
        let span = raw.span();
        let id = key.into_inner();
        let raw = raw.into_inner();
        let discount = match (&raw.percent_off, &raw.amount_off) {
            (Some(p), None) => {
                let v = p.get_ref().0;
                if v <= Decimal::ZERO || v > Decimal::ONE_HUNDRED {
                    self.err(
                        &p.span(),
                        format!("percent_off must be more than 0 and at most 100 ({v})"),
                    );
                }
                if let Some(c) = &raw.currency {
                    self.err(&c.span(), "currency only applies to amount_off coupons");
                }
                Discount::Percent(v)
            }
            (None, Some(a)) => {
                let currency = raw
                    .currency
                    .as_ref()
                    .and_then(|c| self.currency(c))
                    .unwrap_or(default_currency);
                let amount = self.amount("amount_off", a, currency).unwrap_or(0);
                if a.get_ref().0.is_zero() {
                    self.err(&a.span(), "amount_off must be more than 0");
                }
                Discount::Amount { amount, currency }
            }
            (Some(_), Some(a)) => {
                self.err(
                    &a.span(),
                    "a coupon takes percent_off or amount_off, not both",
                );
                Discount::Percent(Decimal::ZERO)
            }
            (None, None) => {
                self.err(
                    &span,
                    format!("coupon {id} needs percent_off or amount_off"),
                );
                Discount::Percent(Decimal::ZERO)
            }
        };
        let duration = match raw.duration.get_ref().as_str() {
            "once" => CouponDuration::Once,
            "forever" => CouponDuration::Forever,
            "repeating" => match &raw.duration_in_months {
                Some(m) => match u32::try_from(*m.get_ref()) {
                    Ok(months) if months >= 1 => CouponDuration::Repeating { months },
                    _ => {
                        self.err(&m.span(), "duration_in_months must be at least 1");
                        CouponDuration::Once
                    }
                },
                None => {
                    self.err(
                        &raw.duration.span(),
                        "a repeating coupon needs duration_in_months",
                    );
                    CouponDuration::Once
                }
            },
            other => {
                let message = format!(
                    "unknown coupon duration \"{other}\"; expected once, repeating or forever"
                );
                self.err(&raw.duration.span(), message);
                CouponDuration::Once
            }
        };
        if let (Some(m), false) = (
            &raw.duration_in_months,
            raw.duration.get_ref() == "repeating",
        ) {
            self.err(
                &m.span(),
                "duration_in_months only applies to duration = \"repeating\"",
            );
        }
        let redeem_by = raw.redeem_by.as_ref().and_then(|d| {
            let parsed = redeem_by(d.get_ref());
            if parsed.is_none() {
                self.err(
                    &d.span(),
                    "redeem_by must be a date (2025-12-31) or a date-time with an offset \
                     (2025-12-31T23:59:59Z)",
                );
            }
            parsed
        });
        let max_redemptions =
            raw.max_redemptions
                .as_ref()
                .and_then(|m| match u32::try_from(*m.get_ref()) {
                    Ok(v) if v >= 1 => Some(v),
                    _ => {
                        self.err(&m.span(), "max_redemptions must be at least 1");
                        None
                    }
                });
        for p in &raw.plans {
            match plans.iter().find(|(plan, _)| plan == p.get_ref()) {
                None => {
                    let message = format!("coupon {id} refers to unknown plan \"{}\"", p.get_ref());
                    self.err(&p.span(), message);
                }
                // An amount off only discounts invoices in its own currency.
                Some((plan, plan_currency)) => {
                    if let Discount::Amount { currency, .. } = &discount {
                        if currency != plan_currency {
                            let message = format!(
                                "coupon {id} takes an amount off in {}, but plan {plan} is priced \
                                 in {}",
                                currency.code(),
                                plan_currency.code()
                            );
                            self.err(&p.span(), message);
                        }
                    }
                }
            }
        }
        Coupon {
            name: raw.name.map_or_else(|| id.clone(), Spanned::into_inner),
            id,
            discount,
            duration,
            redeem_by,
            max_redemptions,
            plans: raw.plans.into_iter().map(Spanned::into_inner).collect(),
        }
    }

    fn flag(&mut self, key: Spanned<String>, raw: Spanned<RawFlag>) -> FeatureFlag {
        self.id("flag", &key);
        let id = key.into_inner();
        let raw = raw.into_inner();
        let rollout_percent = match &raw.rollout_percent {
            None => Decimal::ONE_HUNDRED,
            Some(r) => {
                let v = r.get_ref().0;
                if v < Decimal::ZERO || v > Decimal::ONE_HUNDRED || v.normalize().scale() > 2 {
                    self.err(
                        &r.span(),
                        format!(
                            "rollout_percent must be between 0 and 100 with at most two decimals \
                             ({v})"
                        ),
                    );
                }
                v
            }
        };
        for e in &raw.environments {
            if e.get_ref().trim().is_empty() {
                self.err(&e.span(), "environment names must not be empty");
            }
        }
        FeatureFlag {
            id,
            description: raw.description.map(Spanned::into_inner).unwrap_or_default(),
            enabled: raw.enabled,
            rollout_percent,
            environments: raw
                .environments
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        }
    }
}

/// A catalog date means "through the end of that day, UTC"; a date-time needs an offset.
fn redeem_by(d: &toml::value::Datetime) -> Option<DateTime<Utc>> {
    match (&d.date, &d.time, &d.offset) {
        (Some(date), None, None) => {
            let day = NaiveDate::from_ymd_opt(
                i32::from(date.year),
                u32::from(date.month),
                u32::from(date.day),
            )?;
            let end = day.and_hms_opt(0, 0, 0)?.and_utc() + Duration::days(1);
            Some(end)
        }
        (Some(_), Some(_), Some(_)) => DateTime::parse_from_rfc3339(&d.to_string())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}
