-- Times are INTEGER microseconds since the Unix epoch, UTC.
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE sandboxes (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    runtime TEXT NOT NULL,
    cpu REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    isolation TEXT NOT NULL,
    status TEXT NOT NULL,
    termination_reason TEXT,
    metadata TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER,
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

CREATE TABLE executions (
    id TEXT PRIMARY KEY NOT NULL,
    sandbox_id TEXT NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    context_id TEXT,
    language TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    execution_count INTEGER,
    duration_ms INTEGER NOT NULL,
    code_size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX executions_sandbox_created ON executions (sandbox_id, created_at DESC, id DESC);
CREATE INDEX executions_created ON executions (created_at);
