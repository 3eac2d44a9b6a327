//! Per-node capacity gauges, read from the API's node registry at scrape
//! time: `codebox_nodes{state}`, `codebox_node_slots_used{node}`,
//! `codebox_node_slots_total{node}`, `codebox_node_cpu_used{node}` and
//! `codebox_node_cpu_total{node}`.

use std::fmt;

use codebox_store::NodeState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::RemoteRuntime;

/// The gauges over a [`RemoteRuntime`]'s registry.
#[derive(Debug)]
pub struct NodeGauges {
    runtime: RemoteRuntime,
}

impl NodeGauges {
    pub fn new(runtime: RemoteRuntime) -> Self {
        Self { runtime }
    }
}

impl Collector for NodeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let nodes = self.runtime.nodes();
        {
            let mut family = encoder.encode_descriptor(
                "codebox_nodes",
                "Registered sandbox nodes by state",
                None,
                MetricType::Gauge,
            )?;
            for state in [NodeState::Active, NodeState::Draining, NodeState::Lost] {
                let count = nodes.iter().filter(|node| node.state == state).count();
                let labels = [("state", state.as_str())];
                ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        type Read = fn(&codebox_store::NodeRecord) -> f64;
        let per_node: [(&str, &str, Read); 4] = [
            (
                "codebox_node_slots_used",
                "Live sandboxes placed on the node",
                |n| f64::from(n.usage.sandboxes),
            ),
            (
                "codebox_node_slots_total",
                "Sandbox slots the node offers",
                |n| f64::from(n.registration.capacity.slots),
            ),
            (
                "codebox_node_cpu_used",
                "CPU cores requested by the node's live sandboxes",
                |n| n.usage.cpu,
            ),
            ("codebox_node_cpu_total", "CPU cores the node offers", |n| {
                n.registration.capacity.cpu
            }),
        ];
        for (name, help, read) in per_node {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for node in &nodes {
                let labels = [("node", node.registration.id.as_str())];
                ConstGauge::new(read(node)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
