//! Customer emails: the second delivery channel of the notification outbox.
//!
//! With SMTP configured (`TALLY_SMTP_URL`, `TALLY_EMAIL_FROM`), the server opens the outbox's
//! email channel ([`tally_store::notify::EMAIL_CHANNEL`]) for [`EMAIL_TYPES`]: each such
//! notification gets one email delivery row beside its webhook deliveries, in the same
//! transaction, and the delivery worker sends it with the same lease, per-customer order and
//! exponential backoff as a webhook (never disabling the channel: a broken SMTP server is retried
//! until it is fixed, and alerted on). A delivery is marked done once the SMTP server accepted
//! the message, so a message is sent once; only a crash between the server's acceptance and that
//! commit sends it again, with the same `Message-ID` (the notification's id) so that mail
//! systems can recognise the duplicate.
//!
//! The bodies are plain text from minijinja templates: built in (see `templates/`), each
//! replaceable by a file `<type>.txt` in the directory `TALLY_EMAIL_TEMPLATES`. A template's first
//! line is `Subject: …`, then a blank line, then the body. A customer who opted out
//! (`email_opt_out`) gets nothing; neither does one without an email address.

use std::path::Path;
use std::time::Duration;

use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use tally_store::{ClaimedDelivery, DeliveryAttempt};

use crate::error::ApiError;
use crate::state::AppState;

/// The notification types emailed to the customer.
pub const EMAIL_TYPES: &[&str] = &[
    "credits.low",
    "invoice.payment_failed",
    "payment.action_required",
    "subscription.canceled",
    "subscription.trial_will_end",
    "usage.threshold_reached",
];

/// The usage thresholds (percent) that are emailed; the others reach only the app.
pub const EMAILED_THRESHOLDS: &[u64] = &[80, 100];

const BUILT_IN: &[(&str, &str)] = &[
    ("credits.low", include_str!("templates/credits.low.txt")),
    (
        "invoice.payment_failed",
        include_str!("templates/invoice.payment_failed.txt"),
    ),
    (
        "payment.action_required",
        include_str!("templates/payment.action_required.txt"),
    ),
    (
        "subscription.canceled",
        include_str!("templates/subscription.canceled.txt"),
    ),
    (
        "subscription.trial_will_end",
        include_str!("templates/subscription.trial_will_end.txt"),
    ),
    (
        "usage.threshold_reached",
        include_str!("templates/usage.threshold_reached.txt"),
    ),
];

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Email settings (`TALLY_SMTP_URL`, `TALLY_EMAIL_FROM`, `TALLY_EMAIL_TEMPLATES`).
#[derive(Clone, Default)]
pub struct EmailConfig {
    /// `smtp://user:pass@host:587?tls=required`, `smtps://…:465` or `smtp://host:25` (no TLS;
    /// local relays only). Unset: no customer emails.
    pub smtp_url: Option<String>,
    /// The sender: `billing@example.com` or `Example Billing <billing@example.com>`.
    pub from: Option<String>,
    /// A directory of `<type>.txt` templates replacing the built-in ones.
    pub templates_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the SMTP password.
        f.debug_struct("EmailConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "<set>"))
            .field("from", &self.from)
            .field("templates_dir", &self.templates_dir)
            .finish()
    }
}

impl EmailConfig {
    /// Adds a line to `problems` for each mistake.
    pub fn problems(&self, problems: &mut Vec<String>) {
        let Some(url) = &self.smtp_url else {
            if self.from.is_some() {
                problems.push("TALLY_EMAIL_FROM is set but TALLY_SMTP_URL is not".into());
            }
            return;
        };
        if let Err(e) = transport(url) {
            // Never echo the URL: it may hold the SMTP password.
            problems.push(format!(
                "TALLY_SMTP_URL is not a valid SMTP URL ({e}); e.g. smtp://user:pass@smtp.example.com:587?tls=required"
            ));
        }
        match &self.from {
            None => problems.push(
                "TALLY_SMTP_URL is set but TALLY_EMAIL_FROM (the sender address) is not".into(),
            ),
            Some(f) => {
                if f.parse::<Mailbox>().is_err() {
                    problems.push(format!(
                        "TALLY_EMAIL_FROM {f:?} is not an email address, e.g. \"Example Billing <billing@example.com>\""
                    ));
                }
            }
        }
        if let Err(e) = Templates::load(self.templates_dir.as_deref()) {
            problems.push(e);
        }
    }
}

fn transport(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    Ok(AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|e| e.to_string())?
        .timeout(Some(SMTP_TIMEOUT))
        .build())
}

/// The templates in use: the built-in ones, each replaced by the operator's file if present.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

impl Templates {
    /// Loads and compiles every template; an error names the file and what is wrong with it.
    pub fn load(dir: Option<&Path>) -> Result<Templates, String> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        // Plain text: nothing to escape.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        if let Some(d) = dir {
            if !d.is_dir() {
                return Err(format!(
                    "TALLY_EMAIL_TEMPLATES {} is not a directory",
                    d.display()
                ));
            }
        }
        for (kind, built_in) in BUILT_IN {
            let source = match dir.map(|d| d.join(format!("{kind}.txt"))) {
                Some(p) if p.exists() => std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read the email template {}: {e}", p.display()))?,
                _ => (*built_in).to_owned(),
            };
            if !source.starts_with("Subject:") {
                return Err(format!(
                    "the email template of {kind} must start with a line \"Subject: …\""
                ));
            }
            env.add_template_owned(kind.to_string(), source)
                .map_err(|e| format!("the email template of {kind} does not compile: {e}"))?;
        }
        Ok(Templates { env })
    }

    /// Renders the email of a notification of `kind` with `ctx`.
    pub fn render(&self, kind: &str, ctx: &Value) -> Result<Rendered, String> {
        let t = self
            .env
            .get_template(kind)
            .map_err(|_| format!("no email template for {kind}"))?;
        let text = t.render(ctx).map_err(|e| format!("template {kind}: {e}"))?;
        let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let subject = first
            .strip_prefix("Subject:")
            .unwrap_or(first)
            .trim()
            .to_owned();
        Ok(Rendered {
            subject,
            body: rest.trim_start_matches(['\r', '\n']).to_owned(),
        })
    }
}

/// What sends customer emails: the SMTP transport, the sender and the templates.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    pub templates: Templates,
}

impl Mailer {
    /// The mailer of `cfg`, or `None` when SMTP is not configured. Errors are those
    /// [`EmailConfig::problems`] reports at start.
    pub fn from_config(cfg: &EmailConfig) -> Result<Option<Mailer>, String> {
        let Some(url) = &cfg.smtp_url else {
            return Ok(None);
        };
        let from = cfg
            .from
            .as_deref()
            .ok_or("TALLY_EMAIL_FROM is not set")?
            .parse::<Mailbox>()
            .map_err(|e| e.to_string())?;
        Ok(Some(Mailer {
            transport: transport(url)?,
            from,
            templates: Templates::load(cfg.templates_dir.as_deref())?,
        }))
    }
}

/// Opens the outbox's email channel when SMTP is configured, and closes it when not (so that
/// nothing waits for a channel no process serves).
pub async fn sync_channel(state: &AppState) -> Result<(), ApiError> {
    let events = state
        .mailer
        .as_ref()
        .map(|_| EMAIL_TYPES.iter().map(|t| (*t).to_owned()).collect());
    state
        .store
        .set_email_channel(events, state.clock.now())
        .await?;
    Ok(())
}

/// The template context of a notification for `customer`: `customer`, `data` (the webhook's
/// `data.object`), `event` (`id`, `type`, `created`), and ready-made `plan` (the plan's name),
/// `amount` (e.g. `12.50 USD`) and `trial_end_date` (YYYY-MM-DD) where they apply.
pub fn context(
    state: &AppState,
    n: &tally_store::Notification,
    customer: &tally_store::Customer,
) -> Value {
    let data = &n.payload;
    let plan = data.get("plan").and_then(Value::as_str).map(|id| {
        state
            .catalog
            .plan(id)
            .map_or_else(|| id.to_owned(), |p| p.name.clone())
    });
    let amount = match (
        data.get("amount").and_then(Value::as_i64),
        data.get("currency").and_then(Value::as_str),
    ) {
        (Some(minor), Some(code)) => Some(match tally_core::money::Currency::parse(code) {
            Ok(c) => format!(
                "{} {}",
                c.format_minor(minor),
                c.code().to_ascii_uppercase()
            ),
            Err(_) => format!("{minor} {code}"),
        }),
        _ => None,
    };
    let trial_end_date = data
        .get("trial_end")
        .and_then(Value::as_str)
        .map(|t| t.get(..10).unwrap_or(t).to_owned());
    json!({
        "customer": {"id": customer.id, "name": customer.name, "email": customer.email},
        "data": data,
        "event": {"id": n.id, "type": n.kind, "created": n.created_at},
        "plan": plan,
        "amount": amount,
        "trial_end_date": trial_end_date,
    })
}

/// Why a notification is not emailed to `customer`, if it is not.
fn skip_reason(n: &tally_store::Notification, customer: &tally_store::Customer) -> Option<String> {
    if customer.email_opt_out {
        return Some("skipped: the customer opted out of emails".into());
    }
    if customer.email.as_deref().is_none_or(str::is_empty) {
        return Some("skipped: the customer has no email address".into());
    }
    if n.kind == "usage.threshold_reached" {
        let t = n.payload.get("threshold").and_then(Value::as_u64);
        if !t.is_some_and(|t| EMAILED_THRESHOLDS.contains(&t)) {
            return Some("skipped: only the 80 % and 100 % thresholds are emailed".into());
        }
    }
    if !EMAIL_TYPES.contains(&n.kind.as_str()) {
        return Some(format!("skipped: {} is not emailed", n.kind));
    }
    None
}

/// Sends one claimed email delivery and records the attempt.
pub async fn deliver(state: &AppState, d: ClaimedDelivery) -> Result<(), ApiError> {
    let n = &d.notification;
    let customer = match &n.customer_id {
        Some(id) => state.store.get_customer(id).await?,
        None => None,
    };
    let outcome: Result<Option<u16>, String> = match (&state.mailer, &customer) {
        (None, _) => Err("SMTP is not configured in this process".into()),
        (_, None) => Ok(None),
        (Some(mailer), Some(c)) => match skip_reason(n, c) {
            Some(why) => {
                tracing::debug!(notification = %n.id, customer = %c.id, %why, "email not sent");
                Ok(None)
            }
            None => send(state, mailer, n, c).await.map(Some),
        },
    };
    let at = state.clock.now();
    let (status_code, failure) = match outcome {
        Ok(code) => {
            state
                .metrics
                .add_email(if code.is_some() { "sent" } else { "skipped" });
            (code, None)
        }
        Err(e) => {
            state.metrics.add_email("failed");
            tracing::warn!(notification = %n.id, attempt = d.attempts + 1, error = %e, "customer email failed; will retry");
            let next = at + super::notify::retry_delay(d.attempts.saturating_add(1));
            (None, Some((e, next)))
        }
    };
    state
        .store
        .finish_delivery(DeliveryAttempt {
            delivery_seq: d.seq,
            endpoint_id: d.endpoint.id.clone(),
            holder: state.instance_id.to_string(),
            at,
            status_code,
            failure,
        })
        .await?;
    Ok(())
}

/// Renders and sends; the SMTP server's reply code when it accepted the message.
async fn send(
    state: &AppState,
    mailer: &Mailer,
    n: &tally_store::Notification,
    c: &tally_store::Customer,
) -> Result<u16, String> {
    let to: Mailbox = c
        .email
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| format!("the customer's email address is not valid: {e}"))?;
    let email = mailer.templates.render(&n.kind, &context(state, n, c))?;
    let message = Message::builder()
        .from(mailer.from.clone())
        .to(to)
        .subject(email.subject)
        // Stable per notification: a resend after a crash is recognisable as the same message.
        .message_id(Some(format!("<{}@tally>", n.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(email.body)
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let reply = mailer
        .transport
        .send(message)
        .await
        .map_err(|e| format!("SMTP: {e}"))?;
    Ok(u16::from(reply.code()))
}
