//! The harness shared by the server's integration tests: the real server spawned on a random
//! loopback port, and HTTP helpers that send the admin key.
//!
//! Each test file adds its own domain helpers in its own `impl App` block.
#![allow(dead_code)] // each test file uses a different subset

pub mod stripe_world;
pub mod usage_world;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use tally_server::{Config, Server};

/// The admin key every test app is configured with.
pub const KEY: &str = "test-admin-key-0123456789abcdefghij";

pub struct App {
    pub server: Server,
    pub base: String,
    pub http: Client,
    /// The SQLite database's temp dir, kept alive as long as the app (`None` on PostgreSQL).
    pub _dir: Option<tempfile::TempDir>,
}

/// The app on `url`, listening on a random loopback port with [`KEY`] as its admin key; `f` adjusts
/// the config last.
pub async fn app_on_url(
    url: String,
    dir: Option<tempfile::TempDir>,
    f: impl FnOnce(&mut Config),
) -> App {
    let mut config = Config::new(url).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_key = Some(KEY.into());
    f(&mut config);
    let server = tally_server::spawn(config).await.unwrap();
    App {
        base: format!("http://{}", server.addr()),
        server,
        http: Client::new(),
        _dir: dir,
    }
}

/// The app on a fresh SQLite database in a temp dir.
pub async fn app_with(f: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    app_on_url(url, Some(dir), f).await
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }
}

/// The database a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The app on `db`; `None` when PostgreSQL is not configured outside CI (see
/// `tally_store::testing`).
pub async fn app_on(db: Db, f: impl FnOnce(&mut tally_server::Config)) -> Option<App> {
    match db {
        Db::Sqlite => Some(app_with(f).await),
        Db::Postgres => {
            let url = tally_store::testing::fresh_postgres_url().await?;
            Some(
                app_with(move |c| {
                    c.database_url = url;
                    f(c)
                })
                .await,
            )
        }
    }
}

/// Runs each listed `async fn(Db)` once on SQLite and once on PostgreSQL (with `#[macro_use]` on
/// `mod common` and [`Db`] in scope at the test file's root).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Db::Sqlite).await })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Db::Postgres).await })*
        }
    };
}
