//! The device rules through `Im::route`, without a socket: a real router, the standard
//! registry (default `[devices]`: 3 presences at once, then one per 10 s) and a
//! temporary SQLite file.

use super::Devices as _;
use crate::features::household::Household as _;
use crate::router::im::tests::{Session, World, queued};

const T: &str = "<telemetry xmlns='urn:hearth:telemetry:0'>\
    <value name='temperature' unit='°C'>21.5</value>\
    <value name='humidity' unit='%'>48</value></telemetry>";

/// alice and the device thermo in the household; dave outside it; sensor2, a device
/// outside the household.
fn home() -> World {
    let w = World::new(&["alice", "bob", "thermo", "dave", "sensor2"]);
    for m in ["alice", "bob", "thermo"] {
        w.storage.add_to_household(m).unwrap();
    }
    w.storage.mark_device("thermo").unwrap();
    w.storage.mark_device("sensor2").unwrap();
    w
}

fn online(w: &World, user: &str, resource: &str) -> Session {
    let s = w.bind(user, resource);
    w.send(&s, "<presence/>");
    queued(&s);
    s
}

#[test]
fn a_device_talks_only_to_its_household() {
    let w = home();
    let alice = online(&w, "alice", "phone");
    let dave = online(&w, "dave", "desk");
    let thermo = w.bind("thermo", "esp32");
    // Inside the household: delivered.
    let (out, _) = w.send(
        &thermo,
        "<message to='alice@home.example' type='chat'><body>hot</body></message>",
    );
    assert!(out.is_empty(), "{out}");
    assert!(queued(&alice).iter().any(|s| s.contains("<body>hot")));
    // Outside: forbidden, with a text, and nothing reaches dave.
    let (out, _) = w.send(
        &thermo,
        "<message id='m2' to='dave@home.example' type='chat'><body>hot</body></message>",
    );
    assert!(
        out.contains("type='error'") && out.contains("<forbidden") && out.contains("household"),
        "{out}"
    );
    let (out, _) = w.send(
        &thermo,
        "<presence type='subscribe' to='dave@home.example'/>",
    );
    assert!(out.contains("<forbidden"), "{out}");
    let (out, _) = w.send(
        &thermo,
        "<presence type='subscribed' to='dave@home.example'/>",
    );
    assert!(out.contains("<forbidden"), "{out}");
    let (out, _) = w.send(&thermo, "<presence to='dave@home.example/desk'/>");
    assert!(out.contains("<forbidden"), "{out}");
    let (out, _) = w.send(
        &thermo,
        "<iq type='get' id='p' to='dave@home.example/desk'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(out.contains("<forbidden"), "{out}");
    assert!(queued(&dave).is_empty());
    // No federation: not-allowed, whatever the kind.
    for xml in [
        "<message id='r1' to='zed@elsewhere.example'><body>x</body></message>",
        "<presence type='subscribe' to='zed@elsewhere.example'/>",
        "<iq type='get' id='r2' to='elsewhere.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    ] {
        let (out, _) = w.send(&thermo, xml);
        assert!(
            out.contains("<not-allowed") && out.contains("other servers"),
            "{xml}: {out}"
        );
    }
    // An error is never answered, only dropped.
    let (out, _) = w.send(
        &thermo,
        "<message type='error' to='dave@home.example'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
    );
    assert!(out.is_empty(), "{out}");
    assert!(queued(&dave).is_empty());
    // The server itself and its own account stay open.
    let (out, _) = w.send(
        &thermo,
        "<iq type='get' id='s' to='home.example'><ping xmlns='urn:xmpp:ping'/></iq>",
    );
    assert!(out.contains("type='result'"), "{out}");
    // A device outside the household may message nobody else at all.
    let sensor2 = w.bind("sensor2", "x");
    let (out, _) = w.send(
        &sensor2,
        "<message to='alice@home.example'><body>x</body></message>",
    );
    assert!(out.contains("<forbidden"), "{out}");
    // People are not restricted.
    w.send(
        &dave,
        "<message to='alice@home.example' type='chat'><body>hi</body></message>",
    );
    assert!(queued(&alice).iter().any(|s| s.contains("<body>hi")));
}

#[test]
fn presence_rate_and_telemetry_limits() {
    let w = home();
    let alice = online(&w, "alice", "phone");
    let thermo = w.bind("thermo", "esp32");
    for i in 0..3 {
        let (out, _) = w.send(
            &thermo,
            &format!("<presence><status>{i}</status>{T}</presence>"),
        );
        assert!(!out.contains("type='error'"), "{out}");
    }
    let seen = queued(&alice);
    assert_eq!(
        seen.iter()
            .filter(|s| s.contains("from='thermo@home.example/esp32'"))
            .count(),
        3,
        "{seen:?}"
    );
    // Delivered unchanged: the telemetry element as sent.
    assert!(
        seen.iter()
            .any(|s| s.contains("<value name='humidity' unit='%'>48</value>"))
    );
    let (out, _) = w.send(&thermo, "<presence id='p4'><status>3</status></presence>");
    assert!(
        out.contains("type='error'")
            && out.contains("<error type='wait'><policy-violation")
            && out.contains("one every 10 s"),
        "{out}"
    );
    assert!(queued(&alice).is_empty(), "refused presence was broadcast");
    // Unavailable always passes.
    w.send(&thermo, "<presence type='unavailable'/>");
    assert!(
        queued(&alice)
            .iter()
            .any(|s| s.contains("type='unavailable'"))
    );
    // Over the telemetry limits: refused.
    let mut many = String::from("<presence><telemetry xmlns='urn:hearth:telemetry:0'>");
    for i in 0..33 {
        many.push_str(&format!("<value name='v{i}'>{i}</value>"));
    }
    many.push_str("</telemetry></presence>");
    let (out, _) = w.send(&thermo, &many);
    assert!(
        out.contains("<policy-violation") && out.contains("at most 32"),
        "{out}"
    );
}

#[test]
fn malformed_telemetry_passes_unchanged() {
    let w = home();
    let alice = online(&w, "alice", "phone");
    let thermo = w.bind("thermo", "esp32");
    let odd = "<telemetry xmlns='urn:hearth:telemetry:0'><value name='Temp'>1</value><extra/></telemetry>";
    let (out, _) = w.send(&thermo, &format!("<presence>{odd}</presence>"));
    assert!(!out.contains("type='error'"), "{out}");
    assert!(
        queued(&alice)
            .iter()
            .any(|s| s.contains("<value name='Temp'>1</value><extra/>")),
    );
}

#[test]
fn a_sleepy_device_leaves_its_last_reading() {
    let w = home();
    let alice = online(&w, "alice", "phone");
    let thermo = w.bind("thermo", "esp32");
    w.send(
        &thermo,
        &format!("<presence><status>21.5 °C · 48 %</status>{T}</presence>"),
    );
    queued(&alice);
    // Written at the first report.
    let stored = w.storage.device_presence("thermo").unwrap().unwrap();
    assert_eq!(stored.status, "21.5 °C · 48 %");
    assert!(stored.telemetry.contains("temperature"));
    // The connection goes: the unavailable broadcast keeps the reading.
    smol::block_on(w.im().session_ended(&thermo.jid, thermo.id));
    let gone = queued(&alice);
    let u = gone
        .iter()
        .find(|s| s.contains("type='unavailable'"))
        .expect("unavailable");
    assert!(u.contains("<status>21.5 °C · 48 %</status>"), "{u}");
    assert!(
        u.contains("<value name='temperature' unit='°C'>21.5</value>"),
        "{u}"
    );
    // bob logs in later: the probe answer has the reading and when it was sent.
    let bob = w.bind("bob", "laptop");
    let (out, _) = w.send(&bob, "<presence/>");
    let from_thermo = out
        .split("<presence")
        .find(|s| s.contains("from='thermo@home.example'"))
        .expect("thermo's presence");
    assert!(from_thermo.contains("type='unavailable'"), "{out}");
    assert!(
        from_thermo.contains("<status>21.5 °C · 48 %</status>"),
        "{out}"
    );
    assert!(from_thermo.contains("humidity"), "{out}");
    assert!(
        from_thermo.contains("<delay xmlns='urn:xmpp:delay'"),
        "{out}"
    );
    assert_eq!(from_thermo.matches("<status>").count(), 1, "{out}");
    // XEP-0012: seconds since, and the reading.
    let (out, _) = w.send(
        &bob,
        "<iq type='get' id='l' to='thermo@home.example'><query xmlns='jabber:iq:last'/></iq>",
    );
    assert!(
        out.contains("type='result'") && out.contains("21.5 °C · 48 %"),
        "{out}"
    );
    // A person's probe answer is left as it was.
    let alice2 = w.bind("alice", "tablet");
    smol::block_on(w.im().session_ended(&alice.jid, alice.id));
    let _ = alice2;
    let dave = w.bind("dave", "d");
    let (out, _) = w.send(&dave, "<presence/>");
    assert!(
        !out.contains("thermo"),
        "dave is not in the household: {out}"
    );
}

#[test]
fn writes_are_bounded_while_online_and_made_at_the_end() {
    let w = home();
    let thermo = w.bind("thermo", "esp32");
    w.send(&thermo, "<presence><status>first</status></presence>");
    w.send(&thermo, "<presence><status>second</status></presence>");
    // Within the store interval: the second is kept in memory only.
    assert_eq!(
        w.storage.device_presence("thermo").unwrap().unwrap().status,
        "first"
    );
    smol::block_on(w.im().session_ended(&thermo.jid, thermo.id));
    assert_eq!(
        w.storage.device_presence("thermo").unwrap().unwrap().status,
        "second"
    );
}

#[test]
fn other_servers_do_not_reach_a_device() {
    let w = home();
    let from = crate::jid::Jid::parse("zed@elsewhere.example/x").unwrap();
    let el = crate::router::im::tests::parse(
        "<message to='thermo@home.example' from='zed@elsewhere.example/x'><body>x</body></message>",
    );
    let stanza = crate::stanza::Stanza::from_client(el).unwrap();
    let thermo = online(&w, "thermo", "esp32");
    smol::block_on(w.im().route_remote(&from, stanza));
    assert!(queued(&thermo).is_empty());
}

/// A member who joins the household while the device sleeps gets its last reading at
/// once, as the household's watcher starts presence between them (RFC 6121 §3.1.5,
/// what a probe would have shown).
#[test]
fn a_member_who_joins_later_gets_the_last_reading() {
    let w = home();
    let thermo = w.bind("thermo", "esp32");
    w.send(
        &thermo,
        &format!("<presence><status>21.5 °C</status>{T}</presence>"),
    );
    smol::block_on(w.im().session_ended(&thermo.jid, thermo.id));
    let dave = online(&w, "dave", "desk");
    let mut watcher = smol::block_on(crate::features::household::Watcher::start(w.im()));
    w.storage.add_to_household("dave").unwrap();
    smol::block_on(watcher.check(w.im()));
    let got = queued(&dave);
    let p = got
        .iter()
        .find(|s| s.starts_with("<presence") && s.contains("from='thermo@home.example'"))
        .unwrap_or_else(|| panic!("no reading: {got:?}"));
    assert!(
        p.contains("type='unavailable'")
            && p.contains("<status>21.5 °C</status>")
            && p.contains("urn:hearth:telemetry:0")
            && p.contains("urn:xmpp:delay"),
        "{p}"
    );
    // A person who is offline sends nothing of the kind.
    assert!(
        !got.iter().any(|s| s.contains("from='bob@home.example'")),
        "{got:?}"
    );
}

/// A device that says something as it leaves keeps its word: its own unavailable status
/// goes out as sent; a probe later still shows the last reading.
#[test]
fn a_device_own_unavailable_status_wins() {
    let w = home();
    let alice = online(&w, "alice", "phone");
    let thermo = w.bind("thermo", "esp32");
    w.send(
        &thermo,
        &format!("<presence><status>21.5 °C</status>{T}</presence>"),
    );
    queued(&alice);
    w.send(
        &thermo,
        "<presence type='unavailable'><status>battery low</status></presence>",
    );
    let got = queued(&alice);
    let u = got
        .iter()
        .find(|s| s.contains("type='unavailable'"))
        .expect("unavailable");
    assert!(u.contains("<status>battery low</status>"), "{u}");
    assert!(!u.contains("21.5") && !u.contains("telemetry"), "{u}");
    let bob = w.bind("bob", "laptop");
    let (out, _) = w.send(&bob, "<presence/>");
    assert!(out.contains("<status>21.5 °C</status>"), "{out}");
}

/// The rate is the account's, not the connection's: reconnecting does not reset it
/// (a sensor in a connect loop is held to it too), and another device has its own.
#[test]
fn the_rate_survives_a_reconnect() {
    let w = home();
    let thermo = w.bind("thermo", "esp32");
    for i in 0..3 {
        let (out, _) = w.send(
            &thermo,
            &format!("<presence><status>{i}</status></presence>"),
        );
        assert!(!out.contains("type='error'"), "{out}");
    }
    smol::block_on(w.im().session_ended(&thermo.jid, thermo.id));
    let again = w.bind("thermo", "esp32");
    let (out, _) = w.send(&again, "<presence><status>3</status></presence>");
    assert!(out.contains("<policy-violation"), "{out}");
    let other = w.bind("sensor2", "x");
    let (out, _) = w.send(&other, "<presence><status>0</status></presence>");
    assert!(!out.contains("type='error'"), "{out}");
}

/// XEP-0077 from a device: its password and its removal are the owner's.
#[test]
fn a_device_does_not_change_its_password() {
    use crate::storage::Accounts as _;
    let w = home();
    let thermo = w.bind("thermo", "esp32");
    let (out, _) = w.send(
        &thermo,
        "<iq type='set' id='pw'><query xmlns='jabber:iq:register'>\
         <username>thermo</username><password>mine now</password></query></iq>",
    );
    assert!(
        out.contains("<not-allowed") && out.contains("hearth device password"),
        "{out}"
    );
    let (out, _) = w.send(
        &thermo,
        "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
    );
    assert!(out.contains("<not-allowed"), "{out}");
    assert!(w.storage.account_exists("thermo").unwrap());
    assert!(w.storage.verify_password("thermo", "pw").unwrap());
}
