//! Tally's HTTP API server.
//!
//! [`spawn`] starts the server on the configured address (use `127.0.0.1:0` in tests) and returns
//! its address and a handle; [`Server::shutdown`] stops accepting connections, lets in-flight
//! requests finish and waits until every acknowledged write is committed.

pub mod api;
pub mod auth_limit;
pub mod config;
pub mod conn;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod ratelimit;
pub mod service;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use state::AppState;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database")]
    Store(#[from] tally_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    state: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address `/metrics` is served on when it has its own (`--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The server's shared state (store, catalog), e.g. for tests.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Graceful shutdown: stop accepting, finish in-flight requests, commit queued writes.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        let out = self
            .task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.state.store.close().await;
        out
    }

    /// Waits until the server stops (after [`Server::shutdown`] from elsewhere or an I/O error).
    pub async fn wait(self) -> std::io::Result<()> {
        let out = self
            .task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.state.store.close().await;
        out
    }

    /// A sender that triggers graceful shutdown when `true` is sent.
    pub fn stop_handle(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Validates the config, opens (and migrates) the store, binds, and starts serving plus the
/// period closer.
pub async fn spawn(config: Config) -> Result<Server, StartError> {
    config.validate()?;
    let window = tally_store::sqlite::DedupWindow {
        window: chrono::Duration::from_std(config.dedup_window)
            .unwrap_or(tally_store::DEFAULT_DEDUP_WINDOW),
        clock: config.clock.clone(),
        max_keys: config.dedup_memory_keys,
        writer_cache_kib: config.sqlite_writer_cache_kib,
        reader_cache_kib: config.sqlite_reader_cache_kib,
    };
    let store = tally_store::connect_with_window(&config.database_url, window).await?;
    spawn_with_store(config, store).await
}

/// Like [`spawn`], on an already opened store.
pub async fn spawn_with_store(
    config: Config,
    store: Arc<dyn tally_store::Store>,
) -> Result<Server, StartError> {
    config.validate()?;
    let bind = |at: SocketAddr| async move {
        let l = tokio::net::TcpListener::bind(at)
            .await
            .map_err(|source| StartError::Listen { addr: at, source })?;
        let local = l
            .local_addr()
            .map_err(|source| StartError::Listen { addr: at, source })?;
        Ok::<_, StartError>((l, local))
    };
    let (listener, addr) = bind(config.listen).await?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(bind(at).await?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
    let limits = conn::ConnLimits {
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: conn::effective_max_connections(
            config.max_connections,
            conn::descriptor_limit(),
        ),
    };
    if config.max_connections > limits.max_connections {
        tracing::warn!(
            configured = config.max_connections,
            used = limits.max_connections,
            "--max-connections is above what the file-descriptor limit allows; lowered"
        );
    }
    let mut config = config;
    if config.public_url.is_none() {
        config.public_url = Some(format!("http://{addr}"));
    }
    if config.movable_clock || config.stripe.test_clocks {
        config.movable_clock = true;
        // The clock was moved before a restart: it stays where it was moved to.
        if let Some(ms) = store.clock_offset().await? {
            let by = chrono::Duration::milliseconds(ms) - config.clock.shifted();
            config.clock.shift(by);
        }
    }
    let state = AppState::new(config, store);
    // Before anything is enqueued: notifications from now on fan out to the email channel.
    if let Err(e) = service::email::sync_channel(&state).await {
        tracing::error!(error = %e, "cannot open or close the email channel of the outbox");
    }
    let (stop, stop_rx) = watch::channel(false);
    service::closer::spawn(state.clone(), stop.subscribe());
    service::entitlements::spawn_notifier(state.clone(), stop.subscribe());
    service::stripe_events::spawn(state.clone(), stop.subscribe());
    service::usage_push::spawn(state.clone(), stop.subscribe());
    service::reconcile::spawn(state.clone(), stop.subscribe());
    service::notify::spawn_deliverer(state.clone(), stop.subscribe());
    service::monitor::spawn(state.clone(), stop.subscribe());
    service::sync::spawn(state.clone(), stop.subscribe());
    service::topups::spawn(state.clone(), stop.subscribe());
    let app = api::router(state.clone());
    let metrics_task = metrics_listener.map(|(l, _)| {
        tokio::spawn(conn::serve(
            l,
            api::metrics_router(state.clone()),
            limits,
            state.metrics.clone(),
            stop.subscribe(),
        ))
    });
    let metrics = state.metrics.clone();
    let task = tokio::spawn(async move {
        let out = conn::serve(listener, app, limits, metrics, stop_rx).await;
        if let Some(t) = metrics_task {
            t.await.unwrap_or_else(|e| Err(std::io::Error::other(e)))?;
        }
        out
    });
    tracing::info!(%addr, max_connections = limits.max_connections, "tally listening");
    Ok(Server {
        addr,
        metrics_addr,
        state,
        stop,
        task,
    })
}
