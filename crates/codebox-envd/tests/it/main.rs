//! The one integration-test binary of `codebox-envd`: the envd router in front
//! of a real `Core`, with the fake runtime (`fake`: the protocol end to end)
//! and with real sandboxes (`linux`: needs root and `CODEBOX_AGENT_PATH`).

mod fake;
mod linux;
mod support;
