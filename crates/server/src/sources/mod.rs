//! Sources: where readings come from.
pub mod mqtt;
