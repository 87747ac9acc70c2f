//! The HTTP client: authentication, the pinned API version, idempotency keys, retries with
//! jittered exponential backoff, per-request timeouts and `Request-Id` bookkeeping.

use crate::error::{from_body, Error, ErrorKind};
use crate::form::Form;
use crate::idempotency::IdempotencyKey;
use crate::API_VERSION;
use reqwest::Method;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How failed calls are retried: delays of `base_delay × 2^(n−1)`, capped at `max_delay`, each
/// multiplied by a random factor in [0.5, 1.0) so that many clients do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry, before jitter.
    pub base_delay: Duration,
    /// Upper bound of a delay, before jitter.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Stripe's recommendation: 0.5 s doubling up to 5 s; three attempts.
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based) with the jitter factor `jitter` in
    /// [0.5, 1.0].
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(20);
        let raw = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        raw.mul_f64(jitter.clamp(0.5, 1.0))
    }
}

/// How to reach Stripe.
#[derive(Clone)]
pub struct Config {
    /// Secret or restricted key (`sk_…`, `rk_…`); never printed.
    pub api_key: String,
    /// API base without a trailing slash: `https://api.stripe.com` or the simulator's.
    pub base_url: String,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Retry policy.
    pub retry: RetryPolicy,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_key", &"[redacted]")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Config {
    /// Production Stripe with the default timeout (30 s) and retry policy.
    pub fn new(api_key: impl Into<String>) -> Config {
        Config {
            api_key: api_key.into(),
            base_url: crate::DEFAULT_API_BASE.to_string(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// Another API base (the simulator).
    pub fn with_base_url(mut self, base: impl Into<String>) -> Config {
        self.base_url = base.into().trim_end_matches('/').to_string();
        self
    }

    /// From `STRIPE_API_KEY` (required) and `STRIPE_API_BASE` (optional).
    pub fn from_env() -> Result<Config, String> {
        let key = std::env::var("STRIPE_API_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty())
            .ok_or("STRIPE_API_KEY is not set (a secret key, sk_live_… or sk_test_…)")?;
        let mut cfg = Config::new(key.trim());
        if let Ok(base) = std::env::var("STRIPE_API_BASE") {
            if !base.trim().is_empty() {
                cfg = cfg.with_base_url(base.trim());
            }
        }
        Ok(cfg)
    }
}

/// What the caller keeps about a call: Stripe's `Request-Id` (of the last attempt), how many
/// attempts it took and whether Stripe replayed a saved answer for the idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// `Request-Id` of the response.
    pub request_id: Option<String>,
    /// Attempts made, retries included.
    pub attempts: u32,
    /// `Idempotent-Replayed: true`: the answer is the one saved for this key.
    pub replayed: bool,
}

/// A successful result with its [`Meta`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stripe<T> {
    /// The domain value.
    pub value: T,
    /// Request id, attempts, replay flag.
    pub meta: Meta,
}

impl<T> Stripe<T> {
    /// Drops the meta.
    pub fn into_value(self) -> T {
        self.value
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Stripe<U> {
        Stripe {
            value: f(self.value),
            meta: self.meta,
        }
    }
}

/// A Stripe client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    cfg: Arc<Config>,
    observer: Option<Arc<dyn crate::Observer>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("cfg", &self.cfg).finish()
    }
}

fn config_error(e: impl fmt::Display) -> Error {
    Error {
        kind: ErrorKind::Config(e.to_string()),
        request_id: None,
        status: None,
        attempts: 0,
    }
}

impl Client {
    /// Builds a client; TLS uses rustls with ring's provider and the webpki roots.
    pub fn new(cfg: Config) -> Result<Client, Error> {
        if cfg.retry.max_attempts == 0 {
            return Err(config_error("retry.max_attempts must be at least 1"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(config_error)?;
        Ok(Client {
            http,
            cfg: Arc::new(cfg),
            observer: None,
        })
    }

    /// Tells `observer` about every HTTP request this client (and its clones) makes.
    pub fn with_observer(mut self, observer: Arc<dyn crate::Observer>) -> Client {
        self.observer = Some(observer);
        self
    }

    fn observe(
        &self,
        method: &Method,
        endpoint: &str,
        status: Option<u16>,
        error: Option<&Error>,
        attempt: u32,
        started: std::time::Instant,
    ) {
        if let Some(o) = &self.observer {
            o.request(&crate::RequestRecord {
                method: method.as_str(),
                endpoint,
                status,
                error: error.map(|e| e.to_string()),
                request_id: error.and_then(|e| e.request_id.as_deref()),
                attempt,
                took: started.elapsed(),
            });
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Form,
    ) -> Result<Stripe<T>, Error> {
        self.call(Method::GET, path, query, None).await
    }

    pub(crate) async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &Form,
        key: &IdempotencyKey,
    ) -> Result<Stripe<T>, Error> {
        self.call(Method::POST, path, form, Some(key)).await
    }

    pub(crate) async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Form,
    ) -> Result<Stripe<T>, Error> {
        self.call(Method::DELETE, path, query, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        key: Option<&IdempotencyKey>,
    ) -> Result<Stripe<T>, Error> {
        let (body, meta, status) = self.send(method, path, form, key).await?;
        match serde_json::from_str::<T>(&body) {
            Ok(value) => Ok(Stripe { value, meta }),
            Err(e) => Err(Error {
                kind: ErrorKind::Decode(format!("{path}: {e}")),
                request_id: meta.request_id,
                status: Some(status),
                attempts: meta.attempts,
            }),
        }
    }

    /// Sends one logical request, retrying as the policy and Stripe allow. Retrying a POST is safe
    /// because it carries the same idempotency key each time.
    async fn send(
        &self,
        method: Method,
        path: &str,
        form: &Form,
        key: Option<&IdempotencyKey>,
    ) -> Result<(String, Meta, u16), Error> {
        let url = format!("{}{}", self.cfg.base_url, path);
        let encoded = form.encode();
        let policy = self.cfg.retry;
        let endpoint = crate::observe::endpoint_label(path);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.cfg.api_key)
                .header("Stripe-Version", API_VERSION)
                .timeout(self.cfg.timeout);
            if let Some(k) = key {
                req = req.header("Idempotency-Key", k.as_str());
            }
            req = if method == Method::POST {
                req.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(encoded.clone())
            } else if encoded.is_empty() {
                req
            } else {
                req.query(form.fields())
            };
            let (failure, retry) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let header = |n: &str| {
                        resp.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                    };
                    let request_id = header("request-id");
                    let should_retry = header("stripe-should-retry").map(|v| v == "true");
                    let replayed = header("idempotent-replayed").is_some_and(|v| v == "true");
                    let text = resp.text().await;
                    tracing::info!(
                        target: "tally_stripe",
                        %method, path, status, request_id = request_id.as_deref().unwrap_or("-"),
                        attempt, replayed, "stripe call"
                    );
                    let text = match text {
                        Ok(t) => t,
                        Err(e) => {
                            let kind = if e.is_timeout() {
                                ErrorKind::Timeout
                            } else {
                                ErrorKind::Connection(e.to_string())
                            };
                            let err = Error {
                                kind,
                                request_id,
                                status: Some(status),
                                attempts: attempt,
                            };
                            self.observe(&method, &endpoint, None, Some(&err), attempt, started);
                            if attempt < policy.max_attempts {
                                self.pause(attempt, &err).await;
                                continue;
                            }
                            return Err(err);
                        }
                    };
                    if (200..300).contains(&status) {
                        if let Some(o) = &self.observer {
                            o.request(&crate::RequestRecord {
                                method: method.as_str(),
                                endpoint: &endpoint,
                                status: Some(status),
                                error: None,
                                request_id: request_id.as_deref(),
                                attempt,
                                took: started.elapsed(),
                            });
                        }
                        let meta = Meta {
                            request_id,
                            attempts: attempt,
                            replayed,
                        };
                        return Ok((text, meta, status));
                    }
                    let retry = match should_retry {
                        Some(explicit) => explicit,
                        None => status == 409 || status == 429 || status >= 500,
                    };
                    let err = Error {
                        kind: from_body(status, &text),
                        request_id,
                        status: Some(status),
                        attempts: attempt,
                    };
                    self.observe(
                        &method,
                        &endpoint,
                        Some(status),
                        Some(&err),
                        attempt,
                        started,
                    );
                    (err, retry)
                }
                Err(e) => {
                    let kind = if e.is_timeout() {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Connection(e.to_string())
                    };
                    tracing::info!(target: "tally_stripe", %method, path, attempt, error = %kind, "stripe call failed");
                    let err = Error {
                        kind,
                        request_id: None,
                        status: None,
                        attempts: attempt,
                    };
                    self.observe(&method, &endpoint, None, Some(&err), attempt, started);
                    (err, true)
                }
            };
            if !retry || attempt >= policy.max_attempts {
                return Err(failure);
            }
            self.pause(attempt, &failure).await;
        }
    }

    async fn pause(&self, attempt: u32, failure: &Error) {
        let jitter = 0.5 + rand::random::<f64>() * 0.5;
        let delay = self.cfg.retry.delay(attempt, jitter);
        tracing::warn!(target: "tally_stripe", attempt, ?delay, error = %failure, "retrying stripe call");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(4, 1.0), Duration::from_millis(4000));
        assert_eq!(p.delay(5, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(1, 0.5), Duration::from_millis(250));
        assert_eq!(p.delay(5, 0.5), Duration::from_millis(2500));
        // Out-of-range jitter is clamped to 50–100 %.
        assert_eq!(p.delay(1, 0.1), Duration::from_millis(250));
        assert_eq!(p.delay(1, 3.0), Duration::from_millis(500));
    }
}
