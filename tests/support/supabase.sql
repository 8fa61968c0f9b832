-- A copy of the user's own DDL (their Supabase project's tables): the [userschema] data tests run on it.
-- The user's tables as a Supabase project has them, written from the spec (sections 1-6) and the
-- instagram_business_accounts columns in DESIGN.md: uuid keys with gen_random_uuid(), jsonb,
-- timestamptz, created_at/updated_at defaulting to now(), NOT NULL where the spec's type has no
-- "| null", FKs where the spec says FK, the unique idempotency index, and no other index.
-- The product must work on exactly this (no extra columns, no enum types, no defaults for
-- status / retry_count / resolved / ...), adding only its own tables and indexes.
CREATE TABLE instagram_business_accounts (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  username              text,
  instagram_business_id text,
  access_token          text,
  is_connected          boolean DEFAULT true,
  created_at            timestamptz DEFAULT now(),
  updated_at            timestamptz DEFAULT now()
);

-- 1. Queue Monitor
CREATE TABLE post_queue (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_account_id uuid NOT NULL REFERENCES instagram_business_accounts(id),
  action_type         text NOT NULL,
  payload             jsonb NOT NULL,
  idempotency_key     text NOT NULL,
  status              text NOT NULL,
  retry_count         integer NOT NULL,
  error               text,
  error_category      text,
  instagram_id        text,
  next_retry_at       timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX post_queue_idempotency_key_key ON post_queue (idempotency_key);

-- 2. Agent Status Panel
CREATE TABLE agent_heartbeats (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  agent_id     text NOT NULL,
  status       text NOT NULL,
  last_beat_at timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now()
);

-- 3. Oversight Chat
CREATE TABLE oversight_chat_sessions (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_account_id uuid NOT NULL REFERENCES instagram_business_accounts(id),
  dashboard_user_id   text NOT NULL,
  messages            jsonb NOT NULL,
  session_title       text,
  is_active           boolean NOT NULL,
  last_question       text,
  last_answer         text,
  last_latency_ms     integer,
  last_tools_used     jsonb,
  total_queries       integer NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);

-- 4. Activity Feed (ip_address is "unknown" in the generated types: Postgres inet)
CREATE TABLE audit_log (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  event_type    text NOT NULL,
  action        text NOT NULL,
  resource_type text NOT NULL,
  resource_id   text NOT NULL,
  user_id       text,
  success       boolean,
  error_message text,
  details       jsonb,
  ip_address    inet,
  user_agent    text,
  created_at    timestamptz DEFAULT now()
);

-- 5. System Alerts (business_account_id: "related business account", no FK in the spec)
CREATE TABLE system_alerts (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  alert_type          text NOT NULL,
  message             text NOT NULL,
  business_account_id uuid,
  details             jsonb,
  resolved            boolean NOT NULL,
  resolved_at         timestamptz,
  created_at          timestamptz DEFAULT now(),
  updated_at          timestamptz DEFAULT now()
);

-- 6. Metrics Dashboard
CREATE TABLE analytics_reports (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  business_account_id   uuid NOT NULL REFERENCES instagram_business_accounts(id),
  report_type           text NOT NULL,
  report_date           timestamptz NOT NULL,
  start_date            text NOT NULL,
  end_date              text NOT NULL,
  instagram_metrics     jsonb NOT NULL,
  media_metrics         jsonb NOT NULL,
  revenue_metrics       jsonb NOT NULL,
  historical_comparison jsonb NOT NULL,
  insights              jsonb NOT NULL,
  data_sources          jsonb,
  processed_at          timestamptz NOT NULL,
  run_id                text,
  created_at            timestamptz NOT NULL DEFAULT now()
);
