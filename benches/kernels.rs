//! Criterion benches of the feature and resonance kernels (being written).
fn main() {}
