//! Helpers for tests that need a store (this crate's suite and the server's tests).

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Environment variable naming a PostgreSQL server for tests (a URL whose user may create
/// databases, e.g. `postgres://tally@127.0.0.1:5433/postgres`).
pub const POSTGRES_URL_VAR: &str = "TALLY_TEST_POSTGRES_URL";

/// A fresh, empty PostgreSQL database for one test, as a URL. `None` (after a loud message) when
/// [`POSTGRES_URL_VAR`] is unset outside CI; panics when it is unset and `CI` is set, so CI never
/// silently skips the PostgreSQL half of the suite.
pub async fn fresh_postgres_url() -> Option<String> {
    let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
        if std::env::var_os("CI").is_some() {
            panic!("{POSTGRES_URL_VAR} is not set but CI is: the PostgreSQL tests must run (scripts/test.sh starts a cluster)");
        }
        // Straight to stderr, past the test harness's output capture, so the skip is seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "!!! SKIPPING PostgreSQL test: {POSTGRES_URL_VAR} is not set (scripts/test.sh sets it)"
        );
        return None;
    };
    let name = format!("tally_test_{:016x}", unique());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}={admin}: {e}"));
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    Some(with_database(&admin, &name))
}

/// Brings the PostgreSQL database at `url` to schema `version` (applying migrations up to and
/// including it, no further), so a test can write rows under an older schema and then open the store
/// to migrate them.
pub async fn postgres_migrate_to(url: &str, version: i64) -> crate::Result<()> {
    crate::postgres::migrate_to(url, version).await
}

/// Replaces the database name in a `postgres://…/db?params` URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

fn unique() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::with_database("postgres://u@127.0.0.1:5/postgres", "x"),
            "postgres://u@127.0.0.1:5/x"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5/postgres?sslmode=disable", "x"),
            "postgres://u@h:5/x?sslmode=disable"
        );
        assert_eq!(
            super::with_database("postgres://u@h:5", "x"),
            "postgres://u@h:5/x"
        );
    }
}
