-- Transactional email (kind email.send): the sent-email log errand.emails,
-- the shared Resend rate limit, and the per-database instance id that makes
-- Resend idempotency keys unique across databases. (The template's allowed
-- values are the foundation's arg_enums, published from the Go code.)

-- Identifies this database in Resend idempotency keys
-- (errand-<instance_id>-<job id>): job ids restart in every database, so two
-- databases (staging restored from production, a shard) sharing one Resend
-- team must not send each other's keys.
INSERT INTO errand.settings (name, value) VALUES ('instance_id', gen_random_uuid()::text) ON CONFLICT DO NOTHING;

-- Rate limits shared by every replica (store.ReserveSlot): next_at is when
-- the next request may start, by the database's clock.
CREATE TABLE errand.rate_limits (
    name text PRIMARY KEY,
    next_at timestamptz NOT NULL
);

-- One row per email.send job: what was rendered and what became of it.
-- subject, html, text and sender are stored on the first attempt and reused
-- by every retry, so the request Resend sees is byte-for-byte the same even
-- when a template, the workspace's name or ERRAND_EMAIL_FROM changes.
CREATE TABLE errand.emails (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id uuid NOT NULL,
    job_id bigint UNIQUE,
    recipients text[] NOT NULL DEFAULT '{}',
    template text NOT NULL,
    sender text,
    reply_to text,
    subject text,
    status text NOT NULL DEFAULT 'queued',
    provider_message_id text,
    error text,
    html text,
    text text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    CONSTRAINT status_known CHECK (status IN ('queued', 'sent', 'failed', 'captured'))
);
CREATE INDEX emails_workspace_created_idx ON errand.emails (workspace_id, created_at);

ALTER TABLE errand.emails ENABLE ROW LEVEL SECURITY;
ALTER TABLE errand.emails FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON errand.emails
    USING (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('app.current_workspace_id', true), '')::uuid);

SELECT errand.grant_tenant('errand.emails');
