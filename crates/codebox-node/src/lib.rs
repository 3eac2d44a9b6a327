//! Scale-out for codebox: API replicas (`serve --role api`) and sandbox
//! nodes (`codebox node`) sharing one Postgres database.
//!
//! - [`server`]: a node's internal API, its local `Runtime` over HTTP/1,
//!   behind a shared secret ([`auth`]).
//! - [`RemoteRuntime`]: the API's `Runtime`; places sandboxes
//!   ([`placement`]), forwards every call to the sandbox's node ([`client`]),
//!   and marks silent nodes lost (their sandboxes end as `node_lost`).
//! - [`member`]: a node's registration, heartbeat, reconcile and drain.
//! - [`metrics`]: per-node capacity gauges for the API's `/metrics`.
//!
//! The design and its limits: docs/scale-out.md.

pub mod auth;
pub mod client;
pub mod member;
pub mod metrics;
pub mod placement;
pub mod remote;
pub mod server;
pub mod wire;

pub use auth::NodeSecret;
pub use client::ClientTimeouts;
pub use member::{drain, DrainError, Member, NodeReconcile};
pub use remote::{RemoteRuntime, RemoteSettings};
