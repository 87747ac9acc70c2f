//! Tally's HTTP API server.
//!
//! [`spawn`] starts the server on the configured address (use `127.0.0.1:0` in tests) and returns
//! its address and a handle; [`Server::shutdown`] stops accepting connections, lets in-flight
//! requests finish and waits until every acknowledged write is committed.

pub mod api;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
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
    state: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    let store = tally_store::connect(&config.database_url).await?;
    spawn_with_store(config, store).await
}

/// Like [`spawn`], on an already opened store.
pub async fn spawn_with_store(
    config: Config,
    store: Arc<dyn tally_store::Store>,
) -> Result<Server, StartError> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let state = AppState::new(config, store);
    let (stop, mut stop_rx) = watch::channel(false);
    service::closer::spawn(state.clone(), stop.subscribe());
    service::entitlements::spawn_notifier(state.clone(), stop.subscribe());
    let app = api::router(state.clone());
    // Small responses must not wait for delayed ACKs (Nagle): answer each write at once.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(%addr, "tally listening");
    Ok(Server {
        addr,
        state,
        stop,
        task,
    })
}
