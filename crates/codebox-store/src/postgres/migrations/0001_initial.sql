CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_admin BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Ids compare bytewise (COLLATE "C"): pagination breaks created_at ties by id
-- and must order them the same way on every backend and locale.
CREATE TABLE sandboxes (
    id TEXT COLLATE "C" PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    runtime TEXT NOT NULL,
    cpu DOUBLE PRECISION NOT NULL,
    memory_mb BIGINT NOT NULL,
    isolation TEXT NOT NULL,
    status TEXT NOT NULL,
    termination_reason TEXT,
    metadata JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at TIMESTAMPTZ,
    node TEXT
);
-- Listing: one user's sandboxes, newest first.
CREATE INDEX sandboxes_user_created ON sandboxes (user_id, created_at DESC, id DESC);
-- Quota: counting a user's live sandboxes.
CREATE INDEX sandboxes_user_live ON sandboxes (user_id, status)
    WHERE status IN ('creating', 'running');
-- Reaper: live sandboxes past their expiry.
CREATE INDEX sandboxes_live_expiry ON sandboxes (expires_at)
    WHERE status IN ('creating', 'running');
-- Retention: tombstones by end time.
CREATE INDEX sandboxes_ended ON sandboxes (ended_at) WHERE ended_at IS NOT NULL;
-- Metadata filters (`metadata @> ...`).
CREATE INDEX sandboxes_metadata ON sandboxes USING GIN (metadata jsonb_path_ops);

-- Partitioned by month on created_at; partitions are created ahead by the
-- store (ensure_partitions) and the default partition catches anything else,
-- so an insert never fails for want of a partition. The primary key must
-- include the partition key.
CREATE TABLE executions (
    id TEXT COLLATE "C" NOT NULL,
    sandbox_id TEXT COLLATE "C" NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    context_id TEXT,
    language TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    execution_count BIGINT,
    duration_ms BIGINT NOT NULL,
    code_size BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE executions_default PARTITION OF executions DEFAULT;
CREATE INDEX executions_sandbox_created ON executions (sandbox_id, created_at DESC, id DESC);
