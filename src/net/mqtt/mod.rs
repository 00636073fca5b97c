//! MQTT in, for sensors (issue 21, "MQTT in"): stock firmware (Tasmota, ESPHome) logs in
//! as a hearth account and publishes; its readings become that account's presence, sent
//! through the same router path a client's presence takes.
//!
//! - [`codec`]: MQTT 3.1.1 and 5.0 packets, hand-written, bounded, fuzzed;
//! - [`topic`]: topic names and filters;
//! - [`map`]: publishes to readings (`[[mqtt.map]]`, the Tasmota and ESPHome presets)
//!   and readings to hearth's telemetry presence;
//! - [`session`]: the sans-IO broker side of one connection;
//! - [`conn`]: the listeners and the connection loop (sockets, TLS, timers, the router).
//!
//! Off by default (`[mqtt] enabled`). MQTT over TLS on 8883 with the c2s certificate; plain
//! MQTT on 1883 only with `allow_plain = true`, since its CONNECT carries the device's
//! password in clear for anyone on the LAN to read (stock Tasmota builds have no TLS).

pub mod codec;
pub mod conn;
pub mod map;
pub mod session;
pub mod topic;

/// Whether `account` may log in over MQTT: only device accounts (`hearth device add`,
/// issue 21), which carry the restricted role (household only, no federation, a
/// presence rate). A person's account is refused: MQTT has no way to say who reads what,
/// and a phone's password should never cross the LAN in a plain CONNECT. Storage failing
/// to tell is an error for the caller (the device is told to come back later).
pub async fn mqtt_allowed(
    storage: &crate::storage::Storage,
    account: &str,
) -> Result<bool, crate::storage::StorageError> {
    use crate::features::device::Devices as _;
    let account = account.to_owned();
    crate::router::im::on_pool(storage, move |s| s.is_device(&account)).await
}
