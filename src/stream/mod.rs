//! placeholder
pub mod sasl;
