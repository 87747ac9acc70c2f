-- How far Tally's clock has been moved ahead of the system clock (`tally clock advance`), so
-- that a restart keeps it. One row at most.
CREATE TABLE clock_offset (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    offset_ms  BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
