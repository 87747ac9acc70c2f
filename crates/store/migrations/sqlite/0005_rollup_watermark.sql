-- Rollups are written by the writer at most about once a second rather than at every commit; the
-- events table is the log they are rebuilt from. `through_seq` is the last event whose usage the
-- stored rollups include: at start the writer adds every later event (a crash loses no usage).
CREATE TABLE rollup_watermark (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL
);
INSERT INTO rollup_watermark (id, through_seq) VALUES (1, COALESCE((SELECT MAX(seq) FROM events), 0));
