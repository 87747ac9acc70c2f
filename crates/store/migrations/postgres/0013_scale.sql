-- Rate limits shared by every Tally process on this database: one row per limited key holding
-- the GCRA "theoretical arrival time" (microseconds since the Unix epoch), advanced in one
-- statement per admitted request. UNLOGGED: the counters are worth no WAL flush; after a crash
-- PostgreSQL empties the table, which only forgets the current windows.
CREATE UNLOGGED TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
