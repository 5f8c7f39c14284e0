//! Sources (being written).
