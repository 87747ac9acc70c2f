#![recursion_limit = "512"]
//! A simulator of the parts of Stripe's current API (2025-03-31.basil and later) that Tally uses.
//!
//! Start it in-process for tests with [`spawn`], or run the `stripe-sim` binary. See the crate
//! README for the routes, test cards, test clocks and fault injection.

pub mod api;
pub mod billing;
pub mod error;
pub mod faults;
pub mod form;
pub mod pages;
pub mod render;
pub mod resources;
pub mod sim;
pub mod state;
pub mod util;
pub mod webhooks;

pub use sim::Config;
pub use state::AfterRetries;
pub use webhooks::{sign, signature_header};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use sim::{Shared, Sim};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::unbounded_channel;

/// The HTTP routes: `/v1/...`, the hosted pages and the private `/_sim/...` controls.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/c/pay/{id}",
            get(pages::checkout_get).post(pages::checkout_post),
        )
        .route("/p/session/{id}", get(pages::portal_get))
        .route("/p/session/{id}/{action}", post(pages::portal_post))
        .route("/i/{id}", get(pages::invoice_get))
        .route(
            "/_sim/faults",
            get(faults_get).post(faults_post).delete(faults_delete),
        )
        .route("/_sim/state", get(state_get))
        .route("/_sim/health", get(|| async { "ok" }))
        .route("/v1/{*rest}", any(api::handle))
        .fallback(any(api::handle))
        .with_state(shared)
}

async fn faults_get(State(shared): State<Shared>) -> Response {
    match shared.lock() {
        Ok(s) => Json(serde_json::to_value(&s.faults).unwrap_or_default()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn faults_post(State(shared): State<Shared>, body: Bytes) -> Response {
    let req: faults::FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error::ApiError::invalid(format!("Invalid fault JSON: {e}"), None)
                .into_response();
        }
    };
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match s.faults.add(req) {
        Ok(()) => Json(serde_json::to_value(&s.faults).unwrap_or_default()).into_response(),
        Err(m) => error::ApiError::invalid(m, None).into_response(),
    }
}

async fn faults_delete(State(shared): State<Shared>) -> Response {
    let Ok(mut s) = shared.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // Pending faults only: the request log and in-flight keys describe what already happened.
    s.faults.http.clear();
    s.faults.webhooks.clear();
    Json(serde_json::json!({"cleared": true})).into_response()
}

async fn state_get(State(shared): State<Shared>) -> Response {
    match shared.lock() {
        Ok(s) => Json(serde_json::to_value(&s.w).unwrap_or_default()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A running simulator.
pub struct SimHandle {
    pub addr: SocketAddr,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:<port>`: use as the Stripe API base.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs a closure with the simulator locked (for assertions on its state in tests).
    pub fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> Option<R> {
        self.shared.lock().ok().map(|mut s| f(&mut s))
    }

    /// Stops serving and the background tasks, saving the state file if configured.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        save(&self.shared);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

fn save(shared: &Shared) {
    let (path, json) = {
        let Ok(mut s) = shared.lock() else { return };
        let Some(path) = s.cfg.state_file.clone() else {
            return;
        };
        if !s.dirty {
            return;
        }
        s.dirty = false;
        (path, serde_json::to_vec(&s.w).unwrap_or_default())
    };
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// Binds `cfg.host:cfg.port` (port 0 picks a free one) and serves until the handle is dropped
/// or shut down.
pub async fn spawn(cfg: Config) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind((cfg.host.as_str(), cfg.port)).await?;
    let addr = listener.local_addr()?;
    let world = match &cfg.state_file {
        Some(p) if p.exists() => {
            let bytes = std::fs::read(p)?;
            serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("state file {}: {e}", p.display()),
                )
            })?
        }
        _ => state::World::default(),
    };
    let mut world = world;
    if let Some((url, secret)) = &cfg.webhook {
        if !secret.starts_with("whsec_") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the webhook secret must start with whsec_",
            ));
        }
        if !world
            .webhook_endpoints
            .values()
            .any(|e| e.url == *url && e.secret == *secret)
        {
            let seq = world.next_seq();
            let id = util::new_id("we");
            world.webhook_endpoints.insert(
                id.clone(),
                state::WebhookEndpoint {
                    id,
                    seq,
                    created: util::wall_now(),
                    url: url.clone(),
                    enabled_events: vec!["*".into()],
                    secret: secret.clone(),
                    status: "enabled".into(),
                    description: Some("registered at start".into()),
                    metadata: Default::default(),
                    api_version: None,
                },
            );
        }
    }
    let base = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let cfg = Arc::new(cfg);
    let (tx, rx) = unbounded_channel();
    let mut sim = Sim::new(cfg.clone(), base, world);
    sim.tx = Some(tx);
    let shared: Shared = Arc::new(Mutex::new(sim));
    let mut tasks = vec![];
    tasks.push(tokio::spawn(webhooks::worker(shared.clone(), rx)));
    let ticker_state = shared.clone();
    let tick = cfg.tick;
    tasks.push(tokio::spawn(async move {
        let mut iv = tokio::time::interval(tick);
        loop {
            iv.tick().await;
            if let Ok(mut s) = ticker_state.lock() {
                s.run_until(None, util::wall_now());
                resources::checkout::expire_due(&mut s);
            }
            save(&ticker_state);
        }
    }));
    let (stx, srx) = tokio::sync::oneshot::channel::<()>();
    let app = router(shared.clone());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = srx.await;
            })
            .await;
    }));
    Ok(SimHandle {
        addr,
        shared,
        shutdown: Some(stx),
        tasks,
    })
}
