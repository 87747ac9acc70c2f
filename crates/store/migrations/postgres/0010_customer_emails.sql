-- Customer emails (see the SQLite migration for the meaning of each column).
ALTER TABLE customers ADD COLUMN email_opt_out BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE webhook_endpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook';
