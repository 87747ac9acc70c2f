-- Scoped API keys and an audit log of every mutation.

-- A key's scope (admin, app or read) and, optionally, the one customer it may act for. Existing
-- keys were all admin keys: their role becomes their scope.
ALTER TABLE api_keys RENAME COLUMN role TO scope;
ALTER TABLE api_keys ADD COLUMN customer_id TEXT;

-- Each row records what changed (target type and id) with its state before and after, as JSON.
-- Rows written before this migration were credit grants and adjustments: their details become
-- their `after` state.
ALTER TABLE audit_log RENAME COLUMN object_id TO target_id;
ALTER TABLE audit_log ADD COLUMN target_type TEXT NOT NULL DEFAULT 'credit_entry';
ALTER TABLE audit_log ADD COLUMN before_state TEXT;
ALTER TABLE audit_log ADD COLUMN after_state TEXT;
UPDATE audit_log SET after_state = details;
ALTER TABLE audit_log DROP COLUMN details;
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);
