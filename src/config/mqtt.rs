//! `[mqtt]`: the MQTT listener for sensors (issue 21), off by default.
//!
//! ```toml
//! [mqtt]
//! enabled = true
//! tls_listen = ["[::]:8883"]       # MQTT over TLS, the c2s certificate (the default)
//! allow_plain = true               # also plain MQTT: passwords cross the LAN in clear
//! listen = ["[::]:1883"]           # plain MQTT (the default when allow_plain = true)
//! connect_timeout_secs = 10        # CONNECT must come this soon after connecting
//! max_packet_bytes = 16384         # a larger packet closes the connection
//! coalesce_ms = 500                # readings this close together make one presence
//! max_keep_alive_secs = 600        # a device silent 1.5 × this long is gone
//!
//! [[mqtt.map]]                     # a topic of your own; {name} is the device's account
//! topic = "home/{name}/climate"
//! json = "temperature"             # a field of a JSON payload; absent: the payload itself
//! name = "temperature"
//! unit = "°C"
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigErrorKind, Int, Strings, addresses, default_addr, in_range, invalid};
use crate::net::mqtt::map::{MAX_UNIT_CHARS, MapRule, is_valid_name};

/// The validated `[mqtt]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub enabled: bool,
    /// Plain MQTT listeners; empty unless `allow_plain`.
    pub listen: Vec<SocketAddr>,
    /// MQTT over TLS listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// CONNECT (and its password check) must be done within this.
    pub connect_timeout: Duration,
    /// The largest packet accepted, fixed header included.
    pub max_packet_bytes: usize,
    /// Readings within this of the first unsent one go out in one presence.
    pub coalesce: Duration,
    /// The longest keep-alive a device may ask for (and what keep-alive 0 becomes).
    pub max_keep_alive: u16,
    /// `[[mqtt.map]]`, tried before the built-in presets.
    pub map: Vec<MapRule>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            listen: Vec::new(),
            tls_listen: vec![default_addr(TLS_LISTEN)],
            connect_timeout: Duration::from_secs(10),
            max_packet_bytes: 16 * 1024,
            coalesce: Duration::from_millis(500),
            max_keep_alive: 600,
            map: Vec::new(),
        }
    }
}

const LISTEN: &str = "[::]:1883";
const TLS_LISTEN: &str = "[::]:8883";
/// Map entries at most (each is tried on every publish).
const MAX_RULES: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([mqtt])")]
pub(super) struct RawMqtt {
    enabled: Option<bool>,
    listen: Option<Strings>,
    tls_listen: Option<Strings>,
    allow_plain: Option<bool>,
    connect_timeout_secs: Option<Int>,
    max_packet_bytes: Option<Int>,
    coalesce_ms: Option<Int>,
    max_keep_alive_secs: Option<Int>,
    map: Option<Vec<RawMapRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table ([[mqtt.map]])")]
struct RawMapRule {
    topic: String,
    json: Option<String>,
    name: String,
    unit: Option<String>,
}

impl RawMqtt {
    pub(super) fn validate(self) -> Result<MqttConfig, ConfigErrorKind> {
        let d = MqttConfig::default();
        let allow_plain = self.allow_plain.unwrap_or(false);
        let listen = match self.listen {
            Some(list) => addresses("mqtt.listen", list)?,
            None if allow_plain => vec![default_addr(LISTEN)],
            None => Vec::new(),
        };
        if !listen.is_empty() && !allow_plain {
            return Err(invalid(
                "mqtt.listen",
                "plain MQTT sends device passwords in clear: set allow_plain = true to accept that, or use tls_listen",
            ));
        }
        let tls_listen = match self.tls_listen {
            Some(list) => addresses("mqtt.tls_listen", list)?,
            None => d.tls_listen,
        };
        if let Some(a) = listen.iter().find(|a| tls_listen.contains(a)) {
            return Err(invalid(
                "mqtt.listen",
                format!("{a} is also in mqtt.tls_listen"),
            ));
        }
        let mut map = Vec::new();
        for (i, r) in self.map.unwrap_or_default().into_iter().enumerate() {
            if i >= MAX_RULES {
                return Err(invalid("mqtt.map", format!("at most {MAX_RULES} entries")));
            }
            let key = |k: &str| format!("mqtt.map[{i}].{k}");
            let filter = r.topic.replace("{name}", "+");
            crate::net::mqtt::topic::check_filter(&filter)
                .map_err(|e| invalid(&key("topic"), e))?;
            if r.topic
                .split('/')
                .any(|l| l.contains("{name}") && l != "{name}")
            {
                return Err(invalid(&key("topic"), "{name} must be a level alone"));
            }
            if !is_valid_name(&r.name) {
                return Err(invalid(
                    &key("name"),
                    "1 to 64 characters of a-z, 0-9, '_', '.', '-'",
                ));
            }
            if let Some(j) = &r.json
                && (j.is_empty() || j.split('.').any(str::is_empty))
            {
                return Err(invalid(
                    &key("json"),
                    "a dotted path such as \"AM2301.Temperature\"",
                ));
            }
            if let Some(u) = &r.unit
                && (u.is_empty() || u.chars().count() > MAX_UNIT_CHARS)
            {
                return Err(invalid(
                    &key("unit"),
                    format!("1 to {MAX_UNIT_CHARS} characters"),
                ));
            }
            map.push(MapRule {
                topic: r.topic,
                json: r.json,
                name: r.name,
                unit: r.unit,
            });
        }
        Ok(MqttConfig {
            enabled: self.enabled.unwrap_or(false),
            listen,
            tls_listen,
            connect_timeout: match self.connect_timeout_secs {
                Some(n) => {
                    Duration::from_secs(in_range("mqtt.connect_timeout_secs", n, 1..=300)? as u64)
                }
                None => d.connect_timeout,
            },
            max_packet_bytes: match self.max_packet_bytes {
                Some(n) => in_range("mqtt.max_packet_bytes", n, 256..=1_048_576)? as usize,
                None => d.max_packet_bytes,
            },
            coalesce: match self.coalesce_ms {
                Some(n) => {
                    Duration::from_millis(in_range("mqtt.coalesce_ms", n, 0..=60_000)? as u64)
                }
                None => d.coalesce,
            },
            max_keep_alive: match self.max_keep_alive_secs {
                Some(n) => in_range("mqtt.max_keep_alive_secs", n, 10..=65_535)? as u16,
                None => d.max_keep_alive,
            },
            map,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<MqttConfig, String> {
        let raw: RawMqtt = toml::from_str(toml).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn defaults_are_off_and_tls_only() {
        let c = parse("").unwrap();
        assert!(!c.enabled);
        assert!(c.listen.is_empty());
        assert_eq!(c.tls_listen, vec![default_addr(TLS_LISTEN)]);
        let c = parse("enabled = true\nallow_plain = true").unwrap();
        assert_eq!(c.listen, vec![default_addr(LISTEN)]);
    }

    #[test]
    fn plain_needs_allow_plain() {
        let e = parse("listen = [\"127.0.0.1:1883\"]").unwrap_err();
        assert!(e.contains("allow_plain"), "{e}");
    }

    #[test]
    fn map_entries_are_checked() {
        let c = parse(
            "[[map]]\ntopic = \"home/{name}/t\"\njson = \"a.b\"\nname = \"temperature\"\nunit = \"°C\"",
        )
        .unwrap();
        assert_eq!(c.map.len(), 1);
        for bad in [
            "[[map]]\ntopic = \"a/#/b\"\nname = \"t\"",
            "[[map]]\ntopic = \"a/x{name}\"\nname = \"t\"",
            "[[map]]\ntopic = \"a\"\nname = \"Temperature\"",
            "[[map]]\ntopic = \"a\"\nname = \"t\"\njson = \"a..b\"",
            "[[map]]\ntopic = \"a\"\nname = \"t\"\nunit = \"\"",
            "[[map]]\ntopic = \"a\"\nname = \"t\"\nfield = \"x\"",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
