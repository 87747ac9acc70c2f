-- (customer, event id) unique on disk: the writer keeps in memory only the keys of events inside
-- the deduplication window, and an id first stored before it is found here when it comes again.
CREATE UNIQUE INDEX events_customer_event ON events (customer_id, event_id);
