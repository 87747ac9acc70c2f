-- Credit idempotency keys move into the ledger: the first result of a key is its entry, found
-- through the writer's in-memory index of (customer, key) hashes (rebuilt from this table at
-- start), so a credit request no longer writes a page of a random-key B-tree.
ALTER TABLE credit_entries ADD COLUMN fingerprint TEXT;
UPDATE credit_entries SET fingerprint = (
    SELECT i.fingerprint FROM credit_idempotency i
    WHERE i.customer_id = credit_entries.customer_id AND i.entry_id = credit_entries.id
) WHERE idempotency_key IS NOT NULL;
DROP TABLE credit_idempotency;
