//! MQTT (3.1.1 and 5.0) packets from a device: the codec fed arbitrary bytes as they come
//! off the socket, each decoded packet handed to the broker's session (acknowledgements,
//! topic mapping, the Tasmota and ESPHome presets, telemetry coalescing). It must never
//! panic, never claim more bytes than it was given, and stay within the packet limit.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth::net::mqtt::codec::{self, Decoded, Packet, Version};
use hearth::net::mqtt::map::{self, MapRule};
use hearth::net::mqtt::session::{self, Session};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let rules: Arc<[MapRule]> = Arc::from(vec![MapRule {
        topic: "home/{name}/+".into(),
        json: Some("a.1.b".into()),
        name: "x".into(),
        unit: Some("°C".into()),
    }]);
    let now = Instant::now();
    let mut version = None;
    let mut s: Option<Session> = None;
    let mut rest = data;
    let mut out = Vec::new();
    for _ in 0..64 {
        let (packet, n) = match codec::decode(rest, version, MAX) {
            Ok(Decoded::Packet(p, n)) => (p, n),
            Ok(Decoded::Incomplete) | Err(_) => break,
        };
        assert!(n > 0 && n <= rest.len() && n <= MAX);
        rest = &rest[n..];
        match (packet, &mut s) {
            (Packet::Connect(c), None) => {
                let _ = session::precheck(&c);
                let _ = session::account_of(c.username.as_deref().unwrap_or(""), "home.local");
                version = Some(c.version);
                codec::connack(&mut out, c.version, 0, None, Some(&c.client_id));
                s = Some(Session::new(&c, "thermo".into(), rules.clone()));
            }
            (Packet::Publish(p), None) => {
                let _ = map::map_publish(&rules, "thermo", &p.topic, &p.payload);
            }
            (p, Some(sess)) => {
                let _ = sess.handle(p, now, &mut out);
                let _ = sess.telemetry.take_due(now + Duration::from_secs(1), Duration::ZERO);
            }
            _ => {}
        }
    }
    // The payload as a Tasmota message, whatever it is.
    let _ = map::map_publish(&[], "thermo", "tele/thermo/SENSOR", data);
    let _ = version == Some(Version::V5);
});
