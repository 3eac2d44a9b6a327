//! The codebox binary.
fn main() {}
