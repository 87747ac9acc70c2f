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

pub(crate) fn clock_offset(conn: &Connection) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached("SELECT offset_ms FROM clock_offset WHERE id = 1")?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get(0)?),
        None => None,
    })
}

pub(crate) fn set_clock_offset(
    conn: &Connection,
    offset_ms: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.execute(
        "INSERT INTO clock_offset (id, offset_ms, updated_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET offset_ms = excluded.offset_ms, updated_at = excluded.updated_at",
        params![offset_ms, to_ms(now)],
    )?;
    Ok(())
}
