//! Where a new sandbox goes.
//!
//! Policy: among nodes that are `active`, heartbeated within `lost_after`,
//! offer the requested runtime, and still have room for the sandbox's cpu,
//! memory and one slot, prefer the least loaded, where a node's load after
//! placing is its fullest dimension: `max((sandboxes+1)/slots,
//! (cpu+req)/cpu_cap, (mem+req)/mem_cap)`. Equal loads are ordered randomly,
//! so concurrent API replicas do not all pick the same node. Usage is counted
//! from the database (every replica's placements), so a node never gets more
//! than its capacity from one replica; two replicas racing for a node's last
//! slot are caught by the node's own admission (`AtCapacity`), after which
//! the create is tried on the next candidate.

use codebox_store::{NodeRecord, NodeState};
use codebox_types::Resources;
use time::OffsetDateTime;

/// The candidate nodes for a sandbox, best first (empty: no node has room).
pub fn candidates(
    nodes: &[NodeRecord],
    runtime: &str,
    resources: &Resources,
    fresh_after: OffsetDateTime,
) -> Vec<String> {
    let mut scored: Vec<(f64, u64, &NodeRecord)> = nodes
        .iter()
        .filter(|node| node.state == NodeState::Active && node.last_heartbeat >= fresh_after)
        .filter(|node| {
            node.registration
                .runtimes
                .iter()
                .any(|info| info.answers_to(runtime))
        })
        .filter_map(|node| {
            let load = load_after(node, resources)?;
            Some((load, random(), node))
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    scored
        .into_iter()
        .map(|(_, _, node)| node.registration.id.clone())
        .collect()
}

/// The node's load once the sandbox is on it; `None` if it does not fit.
pub fn load_after(node: &NodeRecord, resources: &Resources) -> Option<f64> {
    let capacity = node.registration.capacity;
    let usage = node.usage;
    let slots = f64::from(usage.sandboxes) + 1.0;
    let cpu = usage.cpu + resources.cpu;
    let memory = usage.memory_mb.saturating_add(resources.memory);
    // A little slack for float sums of cpu.
    if slots > f64::from(capacity.slots) || cpu > capacity.cpu + 1e-9 || memory > capacity.memory_mb
    {
        return None;
    }
    let fraction = |used: f64, total: f64| if total > 0.0 { used / total } else { 1.0 };
    Some(
        fraction(slots, f64::from(capacity.slots))
            .max(fraction(cpu, capacity.cpu))
            .max(fraction(memory as f64, capacity.memory_mb as f64)),
    )
}

fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // Only a tie-breaker: without randomness ties keep their id order.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use codebox_store::{NodeCapacity, NodeRegistration, NodeUsage};
    use codebox_types::RuntimeInfo;

    use super::*;

    fn node(id: &str, sandboxes: u32, state: NodeState, runtime: &str) -> NodeRecord {
        let now = OffsetDateTime::now_utc();
        NodeRecord {
            registration: NodeRegistration {
                id: id.to_owned(),
                address: format!("{id}:1"),
                capacity: NodeCapacity {
                    cpu: 8.0,
                    memory_mb: 8192,
                    slots: 4,
                },
                labels: BTreeMap::new(),
                runtimes: vec![RuntimeInfo {
                    name: runtime.to_owned(),
                    language: "python".to_owned(),
                    version: "3".to_owned(),
                    aliases: vec![],
                }],
                isolation: "namespaces".to_owned(),
                version: "0".to_owned(),
            },
            state,
            usage: NodeUsage {
                sandboxes,
                cpu: f64::from(sandboxes),
                memory_mb: u64::from(sandboxes) * 512,
            },
            started_at: now,
            last_heartbeat: now,
        }
    }

    const SMALL: Resources = Resources {
        cpu: 1.0,
        memory: 512,
    };

    fn long_ago() -> OffsetDateTime {
        OffsetDateTime::now_utc() - time::Duration::minutes(1)
    }

    #[test]
    fn least_loaded_first_and_full_nodes_excluded() {
        let nodes = [
            node("busy", 3, NodeState::Active, "python3"),
            node("idle", 0, NodeState::Active, "python3"),
            node("full", 4, NodeState::Active, "python3"),
            node("half", 2, NodeState::Active, "python3"),
        ];
        assert_eq!(
            candidates(&nodes, "python3", &SMALL, long_ago()),
            vec!["idle", "half", "busy"]
        );
    }

    #[test]
    fn draining_lost_stale_and_wrong_runtime_nodes_get_nothing() {
        let mut stale = node("stale", 0, NodeState::Active, "python3");
        stale.last_heartbeat = OffsetDateTime::now_utc() - time::Duration::minutes(5);
        let nodes = [
            node("draining", 0, NodeState::Draining, "python3"),
            node("lost", 0, NodeState::Lost, "python3"),
            node("node", 0, NodeState::Active, "node"),
            stale,
        ];
        assert!(candidates(&nodes, "python3", &SMALL, long_ago()).is_empty());
    }

    #[test]
    fn memory_and_cpu_bound_the_fit() {
        let nodes = [node("a", 0, NodeState::Active, "python3")];
        let huge_memory = Resources {
            cpu: 1.0,
            memory: 9000,
        };
        assert!(candidates(&nodes, "python3", &huge_memory, long_ago()).is_empty());
        let huge_cpu = Resources {
            cpu: 8.5,
            memory: 128,
        };
        assert!(candidates(&nodes, "python3", &huge_cpu, long_ago()).is_empty());
        let exact = Resources {
            cpu: 8.0,
            memory: 8192,
        };
        assert_eq!(candidates(&nodes, "python3", &exact, long_ago()), vec!["a"]);
    }

    #[test]
    fn ties_are_spread() {
        let nodes = [
            node("a", 0, NodeState::Active, "python3"),
            node("b", 0, NodeState::Active, "python3"),
        ];
        let firsts: std::collections::HashSet<String> = (0..64)
            .map(|_| candidates(&nodes, "python3", &SMALL, long_ago())[0].clone())
            .collect();
        assert_eq!(firsts.len(), 2, "both nodes come first sometimes");
    }
}
