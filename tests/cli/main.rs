//! CLI integration tests (being written).
