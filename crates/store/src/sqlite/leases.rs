//! Named leases.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use crate::time::to_ms;
use crate::Result;

pub(crate) fn acquire(
    conn: &Connection,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool> {
    let n = conn.execute(
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?4)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
         WHERE leases.until <= ?3 OR leases.holder = excluded.holder",
        params![name, holder, to_ms(now), to_ms(until)],
    )?;
    Ok(n == 1)
}
