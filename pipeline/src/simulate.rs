//! Scenario simulator (being written).
