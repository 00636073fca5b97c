//! The network layer: listeners, TLS and the connection loop, the only code that touches sockets.

pub mod conn;
pub mod limits;
pub mod liveness;
pub mod tls;
