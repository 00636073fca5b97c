//! From what a device publishes to its presence: the `[[mqtt.map]]` rules of the
//! configuration first, then the built-in presets for stock firmware — Tasmota
//! (`tele/<name>/SENSOR` JSON, `tele/<name>/LWT` Online/Offline, `tele/<name>/STATE`
//! ignored) and ESPHome (`<name>/sensor/<id>/state` plain values, `<name>/status`
//! online/offline, units from its Home Assistant discovery messages). Sans-IO: a publish
//! in, a [`Mapped`] out; [`Telemetry`] keeps a device's readings and coalesces those that
//! arrive together into one presence.
//!
//! The presence is hearth's telemetry shape (documented in the README, parsed the same by
//! the device accounts' code):
//!
//! ```xml
//! <presence><status>21.5 °C · 48 %</status>
//!   <telemetry xmlns='urn:hearth:telemetry:0'>
//!     <value name='temperature' unit='°C'>21.5</value>
//!     <value name='humidity' unit='%'>48</value>
//!   </telemetry></presence>
//! ```

use std::time::{Duration, Instant};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::xml::Element;

// The telemetry shape is the device module's (one definition of the element and its
// limits): readings built here are what `Telemetry::parse` accepts.
pub use crate::features::device::telemetry::{
    MAX_NAME as MAX_NAME_CHARS, MAX_UNIT as MAX_UNIT_CHARS, MAX_VALUE as MAX_VALUE_CHARS,
    MAX_VALUES, NS_TELEMETRY, Reading, Telemetry as TelemetryElement, is_valid_name,
};

/// One `[[mqtt.map]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRule {
    /// A topic filter (`+`, `#`); a level written `{name}` matches only the device's own
    /// account name.
    pub topic: String,
    /// A dotted path to a JSON field (`AM2301.Temperature`); `None`: the payload is the
    /// value.
    pub json: Option<String>,
    /// The value's name, 1–64 of `[a-z0-9_.-]`.
    pub name: String,
    pub unit: Option<String>,
}

/// What one publish means for the device's presence.
#[derive(Debug, PartialEq, Eq)]
pub enum Mapped {
    /// New values.
    Readings(Vec<Reading>),
    /// A unit for a value, learnt from ESPHome's discovery message.
    Unit { name: String, unit: String },
    /// A birth message: the device is up.
    Available,
    /// A will or "offline": the device is gone.
    Unavailable,
    /// A topic of the device's own that says nothing hearth shows.
    Ignored,
    /// The topic names another device: refused (5.0 PUBACK 0x87), logged at debug.
    NotTheirs,
}

/// A JSON value that keeps an object's keys in the order they came (a status reads in
/// the order the firmware wrote its sensors) and a number as its shortest text.
#[derive(Debug)]
enum Value {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// A payload as JSON (serde_json's parser, its nesting limit of 128).
    fn parse(payload: &[u8]) -> Option<Value> {
        serde_json::from_slice(payload).ok()
    }

    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Number(n.to_string()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
                // Rust writes 48.0 as "48" and 21.5 as "21.5".
                Ok(Value::Number(n.to_string()))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Value::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                let mut m = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Value>()? {
                    m.push((k, v));
                }
                Ok(Value::Object(m))
            }
        }
        d.deserialize_any(V)
    }
}

/// Makes a name from firmware's key (`AM2301.Temperature` → `am2301.temperature`): ASCII
/// lowercased, anything else `_`, cut at 64; `None` when nothing is left.
pub fn normalize_name(key: &str) -> Option<String> {
    let s: String = key
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '_',
        })
        .take(MAX_NAME_CHARS)
        .collect();
    let s = s.trim_matches('_').to_owned();
    (!s.is_empty()).then_some(s)
}

/// A value as published: UTF-8, trimmed, no control characters, 1–256 characters.
fn plain_value(payload: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(payload).ok()?.trim();
    if s.is_empty() || s.chars().count() > MAX_VALUE_CHARS || s.chars().any(char::is_control) {
        return None;
    }
    Some(s.to_owned())
}

/// A JSON number or string as a value's text (48.0 → "48").
fn json_value(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => plain_value(s.as_bytes()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether `topic` matches `filter`, `{name}` levels standing for `account`: `Some(true)`
/// when it does, `Some(false)` when it would but for a `{name}` level naming someone
/// else, `None` when it does not.
fn rule_matches(filter: &str, topic: &str, account: &str) -> Option<bool> {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    let mut own = true;
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return Some(own),
            (Some("+"), Some(_)) => {}
            (Some("{name}"), Some(level)) => own &= level.eq_ignore_ascii_case(account),
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return Some(own),
            _ => return None,
        }
    }
}

/// What `payload` published on `topic` by `account` means.
pub fn map_publish(rules: &[MapRule], account: &str, topic: &str, payload: &[u8]) -> Mapped {
    let mut readings = Vec::new();
    let mut matched = false;
    for rule in rules {
        match rule_matches(&rule.topic, topic, account) {
            None => continue,
            Some(false) => return Mapped::NotTheirs,
            Some(true) => matched = true,
        }
        let value = match &rule.json {
            None => plain_value(payload),
            Some(path) => Value::parse(payload).and_then(|v| {
                path.split('.')
                    .try_fold(&v, |v, key| match v {
                        Value::Array(a) => a.get(key.parse::<usize>().ok()?),
                        _ => v.get(key),
                    })
                    .and_then(json_value)
            }),
        };
        if let Some(value) = value {
            readings.push(Reading {
                name: rule.name.clone(),
                value,
                unit: rule.unit.clone(),
            });
        }
    }
    if matched {
        return if readings.is_empty() {
            Mapped::Ignored
        } else {
            Mapped::Readings(readings)
        };
    }
    let levels: Vec<&str> = topic.split('/').collect();
    let own = |name: &str| name.eq_ignore_ascii_case(account);
    match levels[..] {
        // Tasmota (FullTopic "%prefix%/%topic%/", its default).
        ["tele", name, kind] => {
            if !own(name) {
                return Mapped::NotTheirs;
            }
            match kind {
                "SENSOR" => tasmota_sensor(payload),
                "LWT" => online_offline(payload),
                _ => Mapped::Ignored,
            }
        }
        ["stat" | "cmnd", name, ..] if !own(name) => Mapped::NotTheirs,
        // ESPHome (topic_prefix: the node name, its default).
        [
            name,
            "sensor" | "binary_sensor" | "text_sensor",
            id,
            "state",
        ] => {
            if !own(name) {
                return Mapped::NotTheirs;
            }
            match (normalize_name(id), plain_value(payload)) {
                (Some(name), Some(value)) => Mapped::Readings(vec![Reading {
                    name,
                    value,
                    unit: None,
                }]),
                _ => Mapped::Ignored,
            }
        }
        [name, "status"] if own(name) => online_offline(payload),
        // ESPHome's Home Assistant discovery: the unit of a sensor.
        ["homeassistant", "sensor", node, id, "config"] => {
            if !own(node) {
                return Mapped::NotTheirs;
            }
            let unit = Value::parse(payload).and_then(|v| {
                let u = v
                    .get("unit_of_measurement")
                    .or_else(|| v.get("unit_of_meas"))?;
                Some(u.as_str()?.chars().take(MAX_UNIT_CHARS).collect::<String>())
            });
            // The object id is the sensor's; ESPHome prefixes the node's name to the
            // discovery id only in newer versions with `unique_id`, not in the topic.
            match (unit, normalize_name(id)) {
                (Some(unit), Some(name)) if !unit.is_empty() => Mapped::Unit { name, unit },
                _ => Mapped::Ignored,
            }
        }
        _ => Mapped::Ignored,
    }
}

/// Tasmota's and ESPHome's birth and will payloads.
fn online_offline(payload: &[u8]) -> Mapped {
    match plain_value(payload)
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("online") => Mapped::Available,
        Some("offline") => Mapped::Unavailable,
        _ => Mapped::Ignored,
    }
}

/// Tasmota's unit for a sensor key, given the message's `TempUnit`, `PressureUnit` and
/// `SpeedUnit` (Tasmota's own names, from its sensor drivers).
fn tasmota_unit(key: &str, units: &TasmotaUnits) -> Option<String> {
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    Some(match base {
        "Temperature" | "DewPoint" => format!("°{}", units.temp),
        "Humidity" => "%".into(),
        "Pressure" | "SeaPressure" => units.pressure.clone(),
        "Illuminance" => "lx".into(),
        "Power" | "ActivePower" => "W".into(),
        "ApparentPower" => "VA".into(),
        "ReactivePower" => "VAr".into(),
        "Voltage" => "V".into(),
        "Current" => "A".into(),
        "Total" | "Today" | "Yesterday" => "kWh".into(),
        "CarbonDioxide" | "eCO2" | "CO2" => "ppm".into(),
        "TVOC" => "ppb".into(),
        "Distance" => "cm".into(),
        "Speed" => units.speed.clone()?,
        _ => return None,
    })
}

struct TasmotaUnits {
    temp: String,
    pressure: String,
    speed: Option<String>,
}

/// `tele/<name>/SENSOR`: every numeric leaf a value (`{"AM2301":{"Temperature":21.5}}` →
/// `temperature`, or `am2301.temperature` when two sensors both report one).
fn tasmota_sensor(payload: &[u8]) -> Mapped {
    let Some(v) = Value::parse(payload) else {
        return Mapped::Ignored;
    };
    let unit_of = |k: &str, d: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(MAX_UNIT_CHARS).collect())
            .unwrap_or_else(|| d.to_owned())
    };
    let units = TasmotaUnits {
        temp: unit_of("TempUnit", "C"),
        pressure: unit_of("PressureUnit", "hPa"),
        speed: v
            .get("SpeedUnit")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(MAX_UNIT_CHARS).collect()),
    };
    // (path, last key, value), depth-first in the message's order.
    let mut leaves: Vec<(Vec<String>, String)> = Vec::new();
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        // Bounded: a message is at most a packet, and only MAX_VALUES are kept.
        if out.len() >= MAX_VALUES || path.len() > 8 {
            return;
        }
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    path.push(k.clone());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    path.push((i + 1).to_string());
                    walk(v, path, out);
                    path.pop();
                }
            }
            Value::Number(_) => {
                if let Some(s) = json_value(v) {
                    out.push((path.clone(), s));
                }
            }
            _ => {}
        }
    }
    walk(&v, &mut Vec::new(), &mut leaves);
    // The key that names a value: the last one that is not an array index.
    let key_of = |path: &[String]| -> String {
        let named = path
            .iter()
            .rposition(|k| k.parse::<usize>().is_err())
            .unwrap_or(0);
        path[named..].join(".")
    };
    let short: Vec<String> = leaves.iter().map(|(p, _)| key_of(p)).collect();
    let mut readings = Vec::new();
    for (i, (path, value)) in leaves.iter().enumerate() {
        let unique = short.iter().filter(|s| **s == short[i]).count() == 1;
        let key = if unique {
            short[i].clone()
        } else {
            path.join(".")
        };
        let Some(name) = normalize_name(&key) else {
            continue;
        };
        let unit_key = path
            .iter()
            .rev()
            .find(|k| k.parse::<usize>().is_err())
            .map_or("", String::as_str);
        readings.push(Reading {
            name,
            value: value.clone(),
            unit: tasmota_unit(unit_key, &units),
        });
    }
    if readings.is_empty() {
        Mapped::Ignored
    } else {
        Mapped::Readings(readings)
    }
}

/// A device's readings and when they are due as a presence: values that arrive within
/// `window` of the first unsent one go out together (several ESPHome state topics, one
/// per sensor, published in one burst).
#[derive(Debug, Default)]
pub struct Telemetry {
    /// The latest value of each name, in the order they first came; at most
    /// [`MAX_VALUES`].
    values: Vec<Reading>,
    /// Units learnt from discovery messages, for values published without one.
    units: Vec<(String, String)>,
    /// When the oldest unsent change came.
    dirty_since: Option<Instant>,
}

impl Telemetry {
    /// Takes new readings; returns how many were dropped (over [`MAX_VALUES`]).
    pub fn update(&mut self, readings: Vec<Reading>, now: Instant) -> usize {
        let mut dropped = 0;
        for mut r in readings {
            if r.unit.is_none() {
                r.unit = self
                    .units
                    .iter()
                    .find(|(n, _)| *n == r.name)
                    .map(|(_, u)| u.clone());
            }
            if let Some(i) = self.values.iter().position(|v| v.name == r.name) {
                self.values[i] = r;
            } else if self.values.len() < MAX_VALUES {
                self.values.push(r);
            } else {
                dropped += 1;
                continue;
            }
            self.dirty_since.get_or_insert(now);
        }
        dropped
    }

    /// Remembers a unit for `name` (ESPHome discovery), for its values now and later.
    pub fn set_unit(&mut self, name: String, unit: String) {
        if let Some(v) = self.values.iter_mut().find(|v| v.name == name) {
            v.unit = Some(unit.clone());
        }
        if let Some(i) = self.units.iter().position(|(n, _)| *n == name) {
            self.units[i].1 = unit;
        } else if self.units.len() < MAX_VALUES {
            self.units.push((name, unit));
        }
    }

    /// When the pending change is due, if there is one.
    pub fn due_at(&self, window: Duration) -> Option<Instant> {
        self.dirty_since.map(|t| t + window)
    }

    /// The presence to send now, if a change is due at `now`.
    pub fn take_due(&mut self, now: Instant, window: Duration) -> Option<Element> {
        if self.due_at(window)? > now {
            return None;
        }
        self.dirty_since = None;
        Some(self.presence())
    }

    /// The readings go out again at `at` (the presence carrying them was refused as over
    /// the device's rate); newer readings before then join them.
    pub fn defer(&mut self, at: Instant, window: Duration) {
        self.dirty_since = Some(at.checked_sub(window).unwrap_or(at));
    }

    /// The presence to send now whatever the window (a birth message): what was pending
    /// goes with it.
    pub fn take_now(&mut self) -> Element {
        self.dirty_since = None;
        self.presence()
    }

    /// The presence with every current value (an available presence with no status
    /// when there are none yet).
    pub fn presence(&self) -> Element {
        let mut p = Element::new("presence", crate::ns::CLIENT);
        if self.values.is_empty() {
            return p;
        }
        let telemetry = TelemetryElement {
            values: self.values.clone(),
        };
        p.push_child(Element::new("status", crate::ns::CLIENT).with_text(telemetry.status_text()));
        p.push_child(telemetry.to_element());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(name: &str, value: &str, unit: Option<&str>) -> Reading {
        Reading {
            name: name.into(),
            value: value.into(),
            unit: unit.map(Into::into),
        }
    }

    #[test]
    fn tasmota_sensor_values_and_units() {
        let json = br#"{"Time":"2026-12-05T01:00:00","AM2301":{"Temperature":21.5,"Humidity":48.0,"DewPoint":10.1},"TempUnit":"C"}"#;
        assert_eq!(
            map_publish(&[], "thermo", "tele/thermo/SENSOR", json),
            Mapped::Readings(vec![
                reading("temperature", "21.5", Some("°C")),
                reading("humidity", "48", Some("%")),
                reading("dewpoint", "10.1", Some("°C")),
            ])
        );
    }

    #[test]
    fn tasmota_two_sensors_keep_their_paths() {
        let json = br#"{"DS18B20-1":{"Id":"01","Temperature":20},"DS18B20-2":{"Id":"02","Temperature":22.25},"BME280":{"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"F"}"#;
        assert_eq!(
            map_publish(&[], "pool", "tele/Pool/SENSOR", json),
            Mapped::Readings(vec![
                reading("ds18b20-1.temperature", "20", Some("°F")),
                reading("ds18b20-2.temperature", "22.25", Some("°F")),
                reading("pressure", "1013.2", Some("hPa")),
            ])
        );
    }

    #[test]
    fn tasmota_energy_and_lwt_and_state() {
        let json = br#"{"ENERGY":{"TotalStartTime":"2026-01-01T00:00:00","Total":1.5,"Power":[12,0],"Voltage":230}}"#;
        assert_eq!(
            map_publish(&[], "plug", "tele/plug/SENSOR", json),
            Mapped::Readings(vec![
                reading("total", "1.5", Some("kWh")),
                reading("power.1", "12", Some("W")),
                reading("power.2", "0", Some("W")),
                reading("voltage", "230", Some("V")),
            ])
        );
        assert_eq!(
            map_publish(&[], "plug", "tele/plug/LWT", b"Online"),
            Mapped::Available
        );
        assert_eq!(
            map_publish(&[], "plug", "tele/plug/LWT", b"Offline"),
            Mapped::Unavailable
        );
        assert_eq!(
            map_publish(&[], "plug", "tele/plug/STATE", b"{\"POWER\":\"ON\"}"),
            Mapped::Ignored
        );
        assert_eq!(
            map_publish(&[], "plug", "tele/plug/SENSOR", b"not json"),
            Mapped::Ignored
        );
    }

    #[test]
    fn a_device_publishes_only_for_itself() {
        assert_eq!(
            map_publish(&[], "plug", "tele/oven/SENSOR", b"{\"T\":1}"),
            Mapped::NotTheirs
        );
        assert_eq!(
            map_publish(&[], "plug", "oven/sensor/t/state", b"1"),
            Mapped::NotTheirs
        );
        let rules = [MapRule {
            topic: "home/{name}/temp".into(),
            json: None,
            name: "temperature".into(),
            unit: Some("°C".into()),
        }];
        assert_eq!(
            map_publish(&rules, "plug", "home/oven/temp", b"1"),
            Mapped::NotTheirs
        );
        assert_eq!(
            map_publish(&rules, "plug", "home/PLUG/temp", b" 19.5\n"),
            Mapped::Readings(vec![reading("temperature", "19.5", Some("°C"))])
        );
    }

    #[test]
    fn esphome_states_status_and_units() {
        assert_eq!(
            map_publish(
                &[],
                "balcony",
                "balcony/sensor/outside_temperature/state",
                b"4.3"
            ),
            Mapped::Readings(vec![reading("outside_temperature", "4.3", None)])
        );
        assert_eq!(
            map_publish(&[], "balcony", "balcony/binary_sensor/door/state", b"ON"),
            Mapped::Readings(vec![reading("door", "ON", None)])
        );
        assert_eq!(
            map_publish(&[], "balcony", "balcony/status", b"online"),
            Mapped::Available
        );
        assert_eq!(
            map_publish(&[], "balcony", "balcony/status", b"offline"),
            Mapped::Unavailable
        );
        assert_eq!(
            map_publish(
                &[],
                "balcony",
                "homeassistant/sensor/balcony/outside_temperature/config",
                r#"{"unit_of_measurement":"°C","stat_t":"balcony/sensor/outside_temperature/state"}"#
                    .as_bytes()
            ),
            Mapped::Unit {
                name: "outside_temperature".into(),
                unit: "°C".into()
            }
        );
        // Empty or binary payloads are no value.
        assert_eq!(
            map_publish(&[], "balcony", "balcony/sensor/x/state", b""),
            Mapped::Ignored
        );
        assert_eq!(
            map_publish(&[], "balcony", "balcony/sensor/x/state", b"\xff\xfe"),
            Mapped::Ignored
        );
        let long = vec![b'1'; MAX_VALUE_CHARS + 1];
        assert_eq!(
            map_publish(&[], "balcony", "balcony/sensor/x/state", &long),
            Mapped::Ignored
        );
    }

    #[test]
    fn custom_rules_read_json_paths() {
        let rules = [
            MapRule {
                topic: "zigbee2mqtt/+".into(),
                json: Some("temperature".into()),
                name: "temperature".into(),
                unit: Some("°C".into()),
            },
            MapRule {
                topic: "zigbee2mqtt/+".into(),
                json: Some("battery".into()),
                name: "battery".into(),
                unit: Some("%".into()),
            },
        ];
        assert_eq!(
            map_publish(
                &rules,
                "z",
                "zigbee2mqtt/bath",
                br#"{"temperature":22.1,"battery":97}"#
            ),
            Mapped::Readings(vec![
                reading("temperature", "22.1", Some("°C")),
                reading("battery", "97", Some("%")),
            ])
        );
        assert_eq!(
            map_publish(&rules, "z", "zigbee2mqtt/bath", b"[]"),
            Mapped::Ignored
        );
    }

    #[test]
    fn rule_filters_with_wildcards_and_name() {
        assert_eq!(
            rule_matches("a/{name}/#", "a/thermo/b/c", "thermo"),
            Some(true)
        );
        assert_eq!(rule_matches("a/{name}/#", "a/thermo", "thermo"), Some(true));
        assert_eq!(
            rule_matches("a/{name}/#", "a/oven/b", "thermo"),
            Some(false)
        );
        assert_eq!(rule_matches("a/+/t", "a/x/t", "thermo"), Some(true));
        assert_eq!(rule_matches("a/+/t", "a/x/u", "thermo"), None);
        assert_eq!(rule_matches("a/{name}", "a/thermo/x", "thermo"), None);
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            normalize_name("AM2301.Temperature").as_deref(),
            Some("am2301.temperature")
        );
        assert_eq!(normalize_name("Temp °C").as_deref(), Some("temp__c"));
        assert_eq!(normalize_name("°"), None);
        assert_eq!(normalize_name(&"a".repeat(100)).unwrap().len(), 64);
        assert!(is_valid_name("am2301.temperature"));
        assert!(!is_valid_name("Temperature"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn readings_coalesce_into_one_presence() {
        let t0 = Instant::now();
        let w = Duration::from_millis(300);
        let mut t = Telemetry::default();
        t.set_unit("temperature".into(), "°C".into());
        t.update(vec![reading("temperature", "21.5", None)], t0);
        assert!(t.take_due(t0 + Duration::from_millis(100), w).is_none());
        t.update(
            vec![reading("humidity", "48", Some("%"))],
            t0 + Duration::from_millis(200),
        );
        let p = t.take_due(t0 + w, w).expect("due");
        assert_eq!(
            p.to_xml_in(crate::ns::CLIENT),
            "<presence><status>21.5 °C · 48 %</status>\
             <telemetry xmlns=\"urn:hearth:telemetry:0\">\
             <value name=\"temperature\" unit=\"°C\">21.5</value>\
             <value name=\"humidity\" unit=\"%\">48</value></telemetry></presence>"
        );
        assert!(t.take_due(t0 + w * 10, w).is_none());
    }

    #[test]
    fn values_are_bounded() {
        let mut t = Telemetry::default();
        let now = Instant::now();
        let many = (0..40)
            .map(|i| reading(&format!("v{i}"), "1", None))
            .collect();
        assert_eq!(t.update(many, now), 8);
        let p = t.presence();
        let tel = p.get_child("telemetry", NS_TELEMETRY).unwrap();
        assert_eq!(tel.children().count(), MAX_VALUES);
    }
}
