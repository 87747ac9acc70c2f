-- Customer emails: a second delivery channel of the outbox, and a per-customer opt-out.

-- A customer who opted out receives no email from Tally (webhooks to the app are unaffected).
ALTER TABLE customers ADD COLUMN email_opt_out INTEGER NOT NULL DEFAULT 0;

-- `webhook` (the app's endpoints) or `email` (the one row, id 'email', that fans notifications
-- out to customer emails while SMTP is configured). Deliveries of both kinds share the
-- outbox's claim, order, retry and lag machinery.
ALTER TABLE webhook_endpoints ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook';
