-- Scale-out: sandbox nodes and where each sandbox runs (sandboxes.node,
-- present since 0001). Times are microseconds since the epoch, written by
-- the node (heartbeats) or the API (lost sweep).
CREATE TABLE nodes (
    id TEXT PRIMARY KEY NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    cpu REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    slots INTEGER NOT NULL,
    labels TEXT NOT NULL,
    runtimes TEXT NOT NULL,
    isolation TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL
);
-- Placement and the node-lost sweep: a node's live sandboxes.
CREATE INDEX sandboxes_node_live ON sandboxes (node)
    WHERE status IN ('creating', 'running');
