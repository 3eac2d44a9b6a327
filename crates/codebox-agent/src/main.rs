//! In-sandbox agent.
fn main() {}
