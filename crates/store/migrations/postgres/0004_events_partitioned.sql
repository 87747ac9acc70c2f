-- The event table becomes partitioned by HASH (customer_id) into 16 partitions (events_p00 ..
-- events_p15), so it can grow past what one table and its indexes comfortably hold while several
-- Tally processes ingest into it.
--
-- Why hash by customer rather than by time: `(customer_id, event_id)` must stay unique forever (it
-- is the dedup of ingest's INSERT ... ON CONFLICT DO NOTHING), and PostgreSQL only enforces a unique
-- constraint on a partitioned table when it contains the partition key. With the customer as the
-- key the constraint is enforced per partition, and every query of one customer (ingest's conflict
-- check, the event ids in ingestion order) touches one partition. Time ranges would need a second,
-- unpartitioned table to keep the uniqueness.
--
-- The rows are copied under an exclusive lock inside the migration's transaction: concurrent ingest
-- waits for it, and a failure leaves the old table as it was.

LOCK TABLE events IN ACCESS EXCLUSIVE MODE;

-- `seq` keeps drawing from the sequence the old table's BIGSERIAL created (identity columns on
-- partitioned tables need PostgreSQL 17). The sequence makes it unique across partitions; the primary
-- key includes the partition key, as PostgreSQL requires, and serves "this customer's events in
-- ingestion order" directly.
CREATE TABLE events_partitioned (
    seq                 BIGINT NOT NULL DEFAULT nextval('events_seq_seq'),
    customer_id         TEXT NOT NULL,
    event_id            TEXT NOT NULL,
    metric              TEXT NOT NULL,
    value               NUMERIC NOT NULL,
    ts                  TIMESTAMPTZ NOT NULL,
    properties          JSONB,
    usage_period_start  TIMESTAMPTZ NOT NULL,
    billed_period_start TIMESTAMPTZ NOT NULL,
    ingested_at         TIMESTAMPTZ NOT NULL,
    CONSTRAINT events_partitioned_pkey PRIMARY KEY (customer_id, seq),
    CONSTRAINT events_partitioned_dedup UNIQUE (customer_id, event_id)
) PARTITION BY HASH (customer_id);

DO $$
BEGIN
    FOR i IN 0..15 LOOP
        EXECUTE format(
            'CREATE TABLE events_p%s PARTITION OF events_partitioned
                FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
            lpad(i::text, 2, '0'), i);
    END LOOP;
END
$$;

INSERT INTO events_partitioned (seq, customer_id, event_id, metric, value, ts, properties,
    usage_period_start, billed_period_start, ingested_at)
SELECT seq, customer_id, event_id, metric, value, ts, properties,
    usage_period_start, billed_period_start, ingested_at
FROM events;

-- The sequence now belongs to the new table (dropping the old one would drop it otherwise) and
-- continues past every copied seq.
ALTER SEQUENCE events_seq_seq OWNED BY events_partitioned.seq;
SELECT setval('events_seq_seq', GREATEST(max(seq), (SELECT last_value FROM events_seq_seq)))
FROM events_partitioned
HAVING count(*) > 0;

DROP TABLE events;
ALTER TABLE events_partitioned RENAME TO events;
ALTER TABLE events RENAME CONSTRAINT events_partitioned_pkey TO events_pkey;
ALTER TABLE events RENAME CONSTRAINT events_partitioned_dedup TO events_customer_id_event_id_key;
