pub mod sasl;
pub mod throttle;
