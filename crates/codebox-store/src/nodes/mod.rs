//! Sandbox nodes (scale-out): the `nodes` table, which node runs which
//! sandbox (`sandboxes.node`), and the queries placement and the node-lost
//! sweep need. Behind [`NodeStore`], implemented by both SQL stores with the
//! same SQL (numbered `$n` parameters, each first used in order, which SQLite
//! reads as named parameters bound by position).
//!
//! Timestamps here are integer microseconds since the epoch in both backends;
//! heartbeats carry the writer's clock, so nodes and API replicas need
//! synchronised clocks (NTP) well within `node.lost_after`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use codebox_types::{RuntimeInfo, SandboxId};
use time::OffsetDateTime;

use crate::convert::{from_micros, micros};
use crate::sql_error::{corrupt, map_op};
use crate::{PostgresStore, SqliteStore, StoreError};

/// Whether a node takes new sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Heartbeating and taking new sandboxes.
    Active,
    /// Heartbeating, keeps its sandboxes, takes no new ones (`codebox node drain`).
    Draining,
    /// Stopped heartbeating (or shut down): its sandboxes ended as `node_lost`.
    Lost,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [NodeState::Active, NodeState::Draining, NodeState::Lost]
            .into_iter()
            .find(|state| state.as_str() == value)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a node offers to sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeCapacity {
    /// Cores (sum of the `cpu` of the sandboxes it may hold).
    pub cpu: f64,
    pub memory_mb: u64,
    /// Most sandboxes at once.
    pub slots: u32,
}

/// What a node's live sandboxes take, counted from `sandboxes` (so every API
/// replica sees the same numbers, including creates still in flight).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NodeUsage {
    pub sandboxes: u32,
    pub cpu: f64,
    pub memory_mb: u64,
}

/// What a node writes about itself at registration and on every heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRegistration {
    /// Unique node name.
    pub id: String,
    /// `host:port` of its internal API.
    pub address: String,
    pub capacity: NodeCapacity,
    pub labels: BTreeMap<String, String>,
    /// The runtimes (templates) it can create sandboxes from.
    pub runtimes: Vec<RuntimeInfo>,
    /// Its isolation backend (`namespaces`).
    pub isolation: String,
    /// The codebox version it runs.
    pub version: String,
}

/// A node row with its current usage.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    pub registration: NodeRegistration,
    pub state: NodeState,
    pub usage: NodeUsage,
    pub started_at: OffsetDateTime,
    pub last_heartbeat: OffsetDateTime,
}

/// Node registry and sandbox placement. Every method is one statement.
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// A node (re)starts: inserts or replaces its row as `active`, with
    /// `started_at` and `last_heartbeat` at `at`.
    async fn register_node(
        &self,
        node: &NodeRegistration,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Refreshes a registered node's row and `last_heartbeat`. `draining` stays
    /// draining; `lost` becomes `active` again (the node came back). `None`
    /// when the row is gone (register again).
    async fn heartbeat_node(
        &self,
        node: &NodeRegistration,
        at: OffsetDateTime,
    ) -> Result<Option<NodeState>, StoreError>;

    /// Sets a node's state; `false` if there is no such node.
    async fn set_node_state(&self, id: &str, state: NodeState) -> Result<bool, StoreError>;

    async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError>;

    /// Every node with its usage, by id.
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;

    /// Nodes not yet `lost` whose last heartbeat is before `heartbeat_before`
    /// become `lost`; returns their ids (each reported by exactly one caller).
    async fn mark_lost_nodes(
        &self,
        heartbeat_before: OffsetDateTime,
    ) -> Result<Vec<String>, StoreError>;

    /// Records that a live sandbox runs on `node`. `false` if the sandbox is
    /// not live.
    async fn place_sandbox(&self, sandbox: &SandboxId, node: &str) -> Result<bool, StoreError>;

    /// The node a sandbox was placed on (live or not); `None` for an unknown
    /// sandbox or one never placed.
    async fn sandbox_node(&self, sandbox: &SandboxId) -> Result<Option<String>, StoreError>;

    /// The live sandboxes placed on `node`.
    async fn live_sandboxes_on_node(&self, node: &str) -> Result<Vec<SandboxId>, StoreError>;

    /// The live sandboxes placed on `lost` nodes (to end as `node_lost`).
    async fn live_sandboxes_on_lost_nodes(&self) -> Result<Vec<SandboxId>, StoreError>;
}

const LIVE: &str = "('creating', 'running')";

const NODE_SELECT: &str = "SELECT n.id, n.address, n.state, n.cpu, n.memory_mb, n.slots, \
    n.labels, n.runtimes, n.isolation, n.version, n.started_at, n.last_heartbeat, \
    CAST(COALESCE(u.sandboxes, 0) AS BIGINT) AS used_sandboxes, \
    CAST(COALESCE(u.cpu, 0) AS DOUBLE PRECISION) AS used_cpu, \
    CAST(COALESCE(u.memory_mb, 0) AS BIGINT) AS used_memory_mb \
    FROM nodes n LEFT JOIN (SELECT node, COUNT(*) AS sandboxes, SUM(cpu) AS cpu, \
    SUM(memory_mb) AS memory_mb FROM sandboxes \
    WHERE status IN ('creating', 'running') AND node IS NOT NULL GROUP BY node) u \
    ON u.node = n.id";

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

fn runtimes_json(runtimes: &[RuntimeInfo]) -> String {
    serde_json::to_string(runtimes).unwrap_or_else(|_| "[]".to_owned())
}

/// The columns of one node row, decoded by backend-specific code.
struct RawNode {
    id: String,
    address: String,
    state: String,
    cpu: f64,
    memory_mb: i64,
    slots: i64,
    labels: String,
    runtimes: String,
    isolation: String,
    version: String,
    started_at: i64,
    last_heartbeat: i64,
    used_sandboxes: i64,
    used_cpu: f64,
    used_memory_mb: i64,
}

impl RawNode {
    fn into_record(self, operation: &'static str) -> Result<NodeRecord, StoreError> {
        let labels =
            serde_json::from_str(&self.labels).map_err(|_| corrupt(operation, "labels"))?;
        let runtimes =
            serde_json::from_str(&self.runtimes).map_err(|_| corrupt(operation, "runtimes"))?;
        Ok(NodeRecord {
            registration: NodeRegistration {
                id: self.id,
                address: self.address,
                capacity: NodeCapacity {
                    cpu: self.cpu,
                    memory_mb: u64::try_from(self.memory_mb)
                        .map_err(|_| corrupt(operation, "memory_mb"))?,
                    slots: u32::try_from(self.slots).map_err(|_| corrupt(operation, "slots"))?,
                },
                labels,
                runtimes,
                isolation: self.isolation,
                version: self.version,
            },
            state: NodeState::parse(&self.state).ok_or_else(|| corrupt(operation, "state"))?,
            usage: NodeUsage {
                sandboxes: u32::try_from(self.used_sandboxes)
                    .map_err(|_| corrupt(operation, "used_sandboxes"))?,
                cpu: self.used_cpu,
                memory_mb: u64::try_from(self.used_memory_mb)
                    .map_err(|_| corrupt(operation, "used_memory_mb"))?,
            },
            started_at: from_micros(operation, "started_at", self.started_at)?,
            last_heartbeat: from_micros(operation, "last_heartbeat", self.last_heartbeat)?,
        })
    }
}

fn parse_ids(operation: &'static str, ids: Vec<String>) -> Result<Vec<SandboxId>, StoreError> {
    ids.into_iter()
        .map(|id| id.parse().map_err(|_| corrupt(operation, "id")))
        .collect()
}

/// The same implementation for both backends (the SQL is shared).
macro_rules! node_store {
    ($store:ty, $row:ty) => {
        impl $store {
            fn raw_node(operation: &'static str, row: &$row) -> Result<RawNode, StoreError> {
                use sqlx::Row as _;
                Ok(RawNode {
                    id: row.try_get("id").map_err(map_op(operation))?,
                    address: row.try_get("address").map_err(map_op(operation))?,
                    state: row.try_get("state").map_err(map_op(operation))?,
                    cpu: row.try_get("cpu").map_err(map_op(operation))?,
                    memory_mb: row.try_get("memory_mb").map_err(map_op(operation))?,
                    slots: row.try_get("slots").map_err(map_op(operation))?,
                    labels: row.try_get("labels").map_err(map_op(operation))?,
                    runtimes: row.try_get("runtimes").map_err(map_op(operation))?,
                    isolation: row.try_get("isolation").map_err(map_op(operation))?,
                    version: row.try_get("version").map_err(map_op(operation))?,
                    started_at: row.try_get("started_at").map_err(map_op(operation))?,
                    last_heartbeat: row.try_get("last_heartbeat").map_err(map_op(operation))?,
                    used_sandboxes: row.try_get("used_sandboxes").map_err(map_op(operation))?,
                    used_cpu: row.try_get("used_cpu").map_err(map_op(operation))?,
                    used_memory_mb: row.try_get("used_memory_mb").map_err(map_op(operation))?,
                })
            }
        }

        #[async_trait]
        impl NodeStore for $store {
            async fn register_node(
                &self,
                node: &NodeRegistration,
                at: OffsetDateTime,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO nodes (id, address, state, cpu, memory_mb, slots, labels, \
                     runtimes, isolation, version, started_at, last_heartbeat) \
                     VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9, $10, $10) \
                     ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
                     state = 'active', cpu = excluded.cpu, memory_mb = excluded.memory_mb, \
                     slots = excluded.slots, labels = excluded.labels, \
                     runtimes = excluded.runtimes, isolation = excluded.isolation, \
                     version = excluded.version, started_at = excluded.started_at, \
                     last_heartbeat = excluded.last_heartbeat",
                )
                .bind(&node.id)
                .bind(&node.address)
                .bind(node.capacity.cpu)
                .bind(to_i64(node.capacity.memory_mb))
                .bind(i64::from(node.capacity.slots))
                .bind(labels_json(&node.labels))
                .bind(runtimes_json(&node.runtimes))
                .bind(&node.isolation)
                .bind(&node.version)
                .bind(micros(at))
                .execute(&self.pool)
                .await
                .map_err(map_op("register_node"))?;
                Ok(())
            }

            async fn heartbeat_node(
                &self,
                node: &NodeRegistration,
                at: OffsetDateTime,
            ) -> Result<Option<NodeState>, StoreError> {
                const OP: &str = "heartbeat_node";
                let state: Option<String> = sqlx::query_scalar(
                    "UPDATE nodes SET address = $1, cpu = $2, memory_mb = $3, slots = $4, \
                     labels = $5, runtimes = $6, isolation = $7, version = $8, \
                     last_heartbeat = $9, \
                     state = CASE WHEN state = 'lost' THEN 'active' ELSE state END \
                     WHERE id = $10 RETURNING state",
                )
                .bind(&node.address)
                .bind(node.capacity.cpu)
                .bind(to_i64(node.capacity.memory_mb))
                .bind(i64::from(node.capacity.slots))
                .bind(labels_json(&node.labels))
                .bind(runtimes_json(&node.runtimes))
                .bind(&node.isolation)
                .bind(&node.version)
                .bind(micros(at))
                .bind(&node.id)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_op(OP))?;
                state
                    .map(|state| NodeState::parse(&state).ok_or_else(|| corrupt(OP, "state")))
                    .transpose()
            }

            async fn set_node_state(&self, id: &str, state: NodeState) -> Result<bool, StoreError> {
                let result = sqlx::query("UPDATE nodes SET state = $1 WHERE id = $2")
                    .bind(state.as_str())
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(map_op("set_node_state"))?;
                Ok(result.rows_affected() == 1)
            }

            async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
                const OP: &str = "get_node";
                let sql = format!("{NODE_SELECT} WHERE n.id = $1");
                let row = sqlx::query(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_op(OP))?;
                row.map(|row| Self::raw_node(OP, &row)?.into_record(OP))
                    .transpose()
            }

            async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
                const OP: &str = "list_nodes";
                let sql = format!("{NODE_SELECT} ORDER BY n.id");
                let rows = sqlx::query(&sql)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_op(OP))?;
                rows.iter()
                    .map(|row| Self::raw_node(OP, row)?.into_record(OP))
                    .collect()
            }

            async fn mark_lost_nodes(
                &self,
                heartbeat_before: OffsetDateTime,
            ) -> Result<Vec<String>, StoreError> {
                let mut ids: Vec<String> = sqlx::query_scalar(
                    "UPDATE nodes SET state = 'lost' \
                     WHERE state <> 'lost' AND last_heartbeat < $1 RETURNING id",
                )
                .bind(micros(heartbeat_before))
                .fetch_all(&self.pool)
                .await
                .map_err(map_op("mark_lost_nodes"))?;
                ids.sort();
                Ok(ids)
            }

            async fn place_sandbox(
                &self,
                sandbox: &SandboxId,
                node: &str,
            ) -> Result<bool, StoreError> {
                let sql =
                    format!("UPDATE sandboxes SET node = $1 WHERE id = $2 AND status IN {LIVE}");
                let result = sqlx::query(&sql)
                    .bind(node)
                    .bind(sandbox.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(map_op("place_sandbox"))?;
                Ok(result.rows_affected() == 1)
            }

            async fn sandbox_node(
                &self,
                sandbox: &SandboxId,
            ) -> Result<Option<String>, StoreError> {
                let node: Option<Option<String>> =
                    sqlx::query_scalar("SELECT node FROM sandboxes WHERE id = $1")
                        .bind(sandbox.as_str())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_op("sandbox_node"))?;
                Ok(node.flatten())
            }

            async fn live_sandboxes_on_node(
                &self,
                node: &str,
            ) -> Result<Vec<SandboxId>, StoreError> {
                const OP: &str = "live_sandboxes_on_node";
                let sql = format!(
                    "SELECT id FROM sandboxes WHERE node = $1 AND status IN {LIVE} ORDER BY id"
                );
                let ids: Vec<String> = sqlx::query_scalar(&sql)
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_op(OP))?;
                parse_ids(OP, ids)
            }

            async fn live_sandboxes_on_lost_nodes(&self) -> Result<Vec<SandboxId>, StoreError> {
                const OP: &str = "live_sandboxes_on_lost_nodes";
                let sql = format!(
                    "SELECT s.id FROM sandboxes s JOIN nodes n ON s.node = n.id \
                     WHERE n.state = 'lost' AND s.status IN {LIVE} ORDER BY s.id"
                );
                let ids: Vec<String> = sqlx::query_scalar(&sql)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_op(OP))?;
                parse_ids(OP, ids)
            }
        }
    };
}

node_store!(PostgresStore, sqlx::postgres::PgRow);
node_store!(SqliteStore, sqlx::sqlite::SqliteRow);
