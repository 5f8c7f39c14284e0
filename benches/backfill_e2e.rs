//! End-to-end backfill benchmark (being written).
fn main() {}
