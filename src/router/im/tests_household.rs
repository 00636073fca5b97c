//! The household (`features::household`) through [`Im::route`], without a socket: three
//! people and a sensor see each other's presence from their first login, with no
//! subscription stanza anywhere; their rosters show each other; a member who leaves stops
//! seeing and being seen; blocking (XEP-0191) still wins; roster versions change with the
//! membership (RFC 6121 §2.6).

use super::tests::{Session, World, queued};
use crate::features::household::{Household as _, Watcher};
use crate::features::roster::Roster as _;

const PEOPLE: [&str; 3] = ["alice", "bob", "carol"];

/// A household of alice, bob, carol and the sensor thermo, and dave who is not in it.
fn household() -> World {
    let w = World::with_router(
        &["alice", "bob", "carol", "thermo", "dave"],
        crate::router::Router::new(super::tests::DOMAIN.into()),
    );
    for m in PEOPLE.iter().chain(&["thermo"]) {
        w.storage.add_to_household(m).unwrap();
    }
    w
}

fn no_subscription_traffic(stanzas: &[String]) {
    for s in stanzas {
        assert!(
            !s.contains("type='subscribe") && !s.contains("type='unsubscribe"),
            "subscription stanza: {s}"
        );
    }
}

/// The presence stanzas in `list` from `from` (a full JID's start is enough).
fn from<'a>(list: &'a [String], from: &str) -> Vec<&'a String> {
    list.iter()
        .filter(|s| s.starts_with("<presence") && s.contains(&format!("from='{from}")))
        .collect()
}

/// Splits what was written straight to a client into stanzas (good enough for the
/// flat stanzas the server writes here: each starts with `<presence`, `<iq` or
/// `<message`).
fn split(out: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for (i, _) in out.match_indices('<') {
        let rest = &out[i..];
        if rest.starts_with("<presence") || rest.starts_with("<iq ") || rest.starts_with("<message")
        {
            v.push(String::new());
        }
        if let Some(last) = v.last_mut() {
            let end = out[i + 1..].find('<').map_or(out.len(), |j| i + 1 + j);
            last.push_str(&out[i..end]);
        }
    }
    v
}

fn roster_get(w: &World, s: &Session, ver: Option<&str>) -> String {
    let ver = ver.map(|v| format!(" ver='{v}'")).unwrap_or_default();
    let (out, _) = w.send(
        s,
        &format!("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'{ver}/></iq>"),
    );
    out
}

/// RFC 6121 §4.2.2 / §4.3 as if all were subscribed both ways: each member's initial
/// presence reaches the members already online, and the probes at login bring back
/// theirs, the sensor's status included; dave, not a member, sees nothing and is seen
/// by nobody; no subscription stanza is ever sent.
#[test]
fn members_see_each_other_from_their_first_login() {
    let w = household();
    let thermo = w.bind("thermo", "esp32");
    let (out, _) = w.send(&thermo, "<presence><status>21.5 °C</status></presence>");
    no_subscription_traffic(&split(&out));
    let mut sessions = Vec::new();
    for (i, p) in PEOPLE.iter().enumerate() {
        let s = w.bind(p, "phone");
        let (out, _) = w.send(
            &s,
            &format!("<presence><status>{p} here</status></presence>"),
        );
        let written = split(&out);
        no_subscription_traffic(&written);
        // The probes' answers: the sensor and everyone before.
        let t = from(&written, "thermo@home.example/esp32");
        assert!(
            t.len() == 1 && t[0].contains("21.5 °C"),
            "{p} sees the sensor: {written:?}"
        );
        for earlier in &PEOPLE[..i] {
            let seen = from(&written, &format!("{earlier}@home.example/phone"));
            assert_eq!(seen.len(), 1, "{p} sees {earlier}: {written:?}");
        }
        sessions.push(s);
    }
    let dave = w.bind("dave", "pc");
    let (out, _) = w.send(&dave, "<presence/>");
    assert!(
        !out.contains("thermo@") && !out.contains("alice@"),
        "dave is not in the household: {out}"
    );
    // The broadcasts: everyone got the presence of those who came after.
    for (i, s) in sessions.iter().enumerate() {
        let q = queued(s);
        no_subscription_traffic(&q);
        for later in &PEOPLE[i + 1..] {
            let seen = from(&q, &format!("{later}@home.example/phone"));
            assert!(
                seen.len() == 1 && seen[0].contains(&format!("{later} here")),
                "{} got {later}'s presence: {q:?}",
                PEOPLE[i]
            );
        }
        assert!(from(&q, "dave@").is_empty(), "{q:?}");
    }
    let q = queued(&thermo);
    no_subscription_traffic(&q);
    for p in PEOPLE {
        assert_eq!(
            from(&q, &format!("{p}@home.example/phone")).len(),
            1,
            "{q:?}"
        );
    }
    assert!(queued(&dave).is_empty());
    // §4.5.2: unavailable reaches the members too, with the sensor's last words.
    w.send(
        &thermo,
        "<presence type='unavailable'><status>battery low</status></presence>",
    );
    for s in &sessions {
        let q = queued(s);
        let gone = from(&q, "thermo@home.example/esp32");
        assert!(
            gone.len() == 1
                && gone[0].contains("type='unavailable'")
                && gone[0].contains("battery low"),
            "{q:?}"
        );
    }
    assert!(queued(&dave).is_empty());
    // A probe from a member for one who is offline is answered with the last status.
    let (out, _) = w.send(
        &sessions[0],
        "<presence type='probe' to='thermo@home.example'/>",
    );
    assert!(
        out.contains("type='unavailable'") && out.contains("battery low"),
        "{out}"
    );
    // dave's probe gets nothing.
    let (out, _) = w.send(&dave, "<presence type='probe' to='thermo@home.example'/>");
    assert!(out.is_empty(), "{out}");
}

/// §2.1.3 with the household: every other member as an item with `subscription='both'`
/// in the household's group; the user's own item keeps its name and groups.
#[test]
fn roster_get_shows_the_other_members() {
    let w = household();
    let a = w.bind("alice", "phone");
    // Interested in pushes (§2.1.6).
    roster_get(&w, &a, None);
    // Alice's own item for bob: her name and group win, and she has dave too.
    w.send(
        &a,
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='bob@home.example' name='Dad'><group>Family</group></item></query></iq>",
    );
    let push = queued(&a);
    assert!(
        push.iter()
            .any(|p| p.contains("name='Dad'") && p.contains("subscription='both'")),
        "the push shows the item as the roster does: {push:?}"
    );
    w.send(
        &a,
        "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='dave@home.example'/></query></iq>",
    );
    let out = roster_get(&w, &a, None);
    let items = split(&out.replace("<item", "<iq <item"));
    let item = |jid: &str| {
        items
            .iter()
            .find(|i| i.contains(&format!("jid='{jid}'")))
            .cloned()
            .unwrap_or_else(|| panic!("no {jid} in {out}"))
    };
    let bob = item("bob@home.example");
    assert!(
        bob.contains("name='Dad'")
            && bob.contains("subscription='both'")
            && bob.contains("<group>Family</group>")
            && !bob.contains("Household"),
        "{bob}"
    );
    for m in ["carol@home.example", "thermo@home.example"] {
        let it = item(m);
        assert!(
            it.contains("subscription='both'") && it.contains("<group>Household</group>"),
            "{it}"
        );
    }
    assert!(item("dave@home.example").contains("subscription='none'"));
    assert!(
        !out.contains("jid='alice@home.example'"),
        "not herself: {out}"
    );
    // A member alice has no item of her own for is not hers to remove.
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='r3'><query xmlns='jabber:iq:roster'><item jid='carol@home.example' subscription='remove'/></query></iq>",
    );
    assert!(
        out.contains("type='error'") && out.contains("not-allowed") && out.contains("household"),
        "{out}"
    );
    // Nobody at all: §2.5.3.
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='r4'><query xmlns='jabber:iq:roster'><item jid='zed@home.example' subscription='remove'/></query></iq>",
    );
    assert!(out.contains("item-not-found"), "{out}");
    // dave's roster has no household.
    let d = w.bind("dave", "pc");
    let out = roster_get(&w, &d, None);
    assert!(!out.contains("<item"), "{out}");
}

/// §2.6 and §2.1.6: a membership change is a new roster version for the members; the
/// watcher pushes the change to online members, and presence starts flowing both ways.
#[test]
fn joining_changes_the_version_and_is_pushed_with_presence() {
    let w = household();
    w.storage.remove_from_household("thermo").unwrap();
    let mut watcher = smol::block_on(Watcher::start(w.im()));
    let a = w.bind("alice", "phone");
    w.send(&a, "<presence/>");
    let out = roster_get(&w, &a, None);
    let ver = w.storage.roster_version("alice").unwrap();
    assert!(out.contains(&format!("ver='{ver}'")), "{out}");
    // Current: an empty result.
    assert!(!roster_get(&w, &a, Some(&ver.to_string())).contains("<query"));
    let t = w.bind("thermo", "esp32");
    w.send(&t, "<presence><status>19 °C</status></presence>");
    queued(&a);
    queued(&t);

    w.storage.add_to_household("thermo").unwrap();
    let newer = w.storage.roster_version("alice").unwrap();
    assert!(newer > ver);
    smol::block_on(watcher.check(w.im()));
    let q = queued(&a);
    no_subscription_traffic(&q);
    let push = q
        .iter()
        .position(|s| s.contains("jid='thermo@home.example'") && s.contains("subscription='both'"))
        .unwrap_or_else(|| panic!("push: {q:?}"));
    assert!(q[push].contains(&format!("ver='{newer}'")), "{q:?}");
    let presence = q
        .iter()
        .position(|s| s.starts_with("<presence") && s.contains("19 °C"))
        .unwrap_or_else(|| panic!("thermo's presence: {q:?}"));
    assert!(push < presence, "the push comes first: {q:?}");
    // thermo hears of alice (thermo asked for no roster, so no push) and her presence.
    let q = queued(&t);
    no_subscription_traffic(&q);
    assert_eq!(from(&q, "alice@home.example/phone").len(), 1, "{q:?}");
    // The cached version is no longer current: the whole roster, with thermo.
    let out = roster_get(&w, &a, Some(&ver.to_string()));
    assert!(out.contains("jid='thermo@home.example'"), "{out}");
    // Nothing changed: nothing more.
    smol::block_on(watcher.check(w.im()));
    assert!(queued(&a).is_empty());
}

/// Leaving: the others get a push removing the item (or showing their own item as it
/// is stored) and unavailable from the one who left, who gets the same from them; no
/// presence flows afterwards.
#[test]
fn leaving_stops_presence_and_is_pushed() {
    let w = household();
    let mut watcher = smol::block_on(Watcher::start(w.im()));
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "desk");
    let t = w.bind("thermo", "esp32");
    // Bob keeps an item of his own for the sensor.
    w.send(
        &b,
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='thermo@home.example' name='Kitchen'/></query></iq>",
    );
    for s in [&a, &b] {
        roster_get(&w, s, None);
        w.send(s, "<presence/>");
    }
    w.send(&t, "<presence><status>20 °C</status></presence>");
    let vt = w.storage.roster_version("thermo").unwrap();
    for s in [&a, &b, &t] {
        queued(s);
    }
    w.storage.remove_from_household("thermo").unwrap();
    assert!(w.storage.roster_version("thermo").unwrap() > vt);
    smol::block_on(watcher.check(w.im()));
    let q = queued(&a);
    no_subscription_traffic(&q);
    assert!(
        q.iter().any(|s| s.contains("jid='thermo@home.example'")
            && s.contains("subscription='remove'")),
        "{q:?}"
    );
    let gone = from(&q, "thermo@home.example/esp32");
    assert!(
        gone.len() == 1 && gone[0].contains("type='unavailable'"),
        "{q:?}"
    );
    let q = queued(&b);
    assert!(
        q.iter().any(|s| s.contains("jid='thermo@home.example'")
            && s.contains("name='Kitchen'")
            && s.contains("subscription='none'")),
        "bob's own item, as stored: {q:?}"
    );
    let q = queued(&t);
    for p in ["alice", "bob"] {
        let gone = from(&q, &format!("{p}@home.example/"));
        assert!(
            gone.len() == 1 && gone[0].contains("type='unavailable'"),
            "{q:?}"
        );
    }
    // From now on nothing flows.
    w.send(&t, "<presence><status>21 °C</status></presence>");
    assert!(queued(&a).is_empty() && queued(&b).is_empty());
    let (out, _) = w.send(&a, "<presence type='probe' to='thermo@home.example'/>");
    assert!(out.is_empty(), "{out}");
}

/// XEP-0191 wins over the household: a member who blocked another neither sends nor
/// gets its presence, at login, broadcast or probe.
#[test]
fn blocking_wins() {
    let w = household();
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "desk");
    let c = w.bind("carol", "tablet");
    w.send(&b, "<presence/>");
    w.send(
        &a,
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@home.example'/></block></iq>",
    );
    let (out, _) = w.send(&a, "<presence/>");
    let written = split(&out);
    assert!(from(&written, "bob@").is_empty(), "{written:?}");
    assert!(from(&queued(&b), "alice@").is_empty());
    w.send(&b, "<presence><status>still here</status></presence>");
    assert!(from(&queued(&a), "bob@").is_empty());
    // Carol is not blocked by anyone.
    let (out, _) = w.send(&c, "<presence/>");
    let written = split(&out);
    assert_eq!(from(&written, "alice@").len(), 1, "{written:?}");
    assert_eq!(from(&written, "bob@").len(), 1, "{written:?}");
    // Bob probing alice gets nothing.
    let (out, _) = w.send(&b, "<presence type='probe' to='alice@home.example'/>");
    assert!(out.is_empty(), "{out}");
}

/// A member's own roster item for another member removed (§2.5): the household item is
/// pushed in its place, and presence keeps flowing (no unavailable, §3.2.2 does not
/// apply); unsubscribing from a member stops nothing either.
#[test]
fn own_items_and_subscriptions_do_not_undo_the_household() {
    let w = household();
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "desk");
    for s in [&a, &b] {
        roster_get(&w, s, None);
        w.send(s, "<presence/>");
    }
    // A real subscription both ways, as before the household existed.
    w.send(&a, "<presence type='subscribe' to='bob@home.example'/>");
    w.send(&b, "<presence type='subscribed' to='alice@home.example'/>");
    w.send(&b, "<presence type='subscribe' to='alice@home.example'/>");
    w.send(&a, "<presence type='subscribed' to='bob@home.example'/>");
    for s in [&a, &b] {
        queued(s);
    }
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='bob@home.example' subscription='remove'/></query></iq>",
    );
    assert!(out.contains("type='result'"), "{out}");
    let q = queued(&a);
    assert!(
        q.iter().any(|s| s.contains("jid='bob@home.example'")
            && s.contains("subscription='both'")
            && s.contains("Household")),
        "{q:?}"
    );
    assert!(
        !q.iter().any(|s| s.contains("subscription='remove'")),
        "{q:?}"
    );
    let q = queued(&b);
    assert!(
        q.iter()
            .all(|s| !(s.starts_with("<presence") && s.contains("type='unavailable'"))),
        "bob still sees alice: {q:?}"
    );
    w.send(&a, "<presence><status>back</status></presence>");
    assert!(queued(&b).iter().any(|s| s.contains("back")));
}

/// §3.1.3 as if already subscribed: a member's client asking another member for its
/// presence gets `subscribed` at once on the contact's behalf; the contact never sees a
/// request, and nothing is stored.
#[test]
fn a_request_between_members_is_answered_at_once() {
    let w = household();
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "desk");
    for s in [&a, &b] {
        w.send(s, "<presence/>");
    }
    queued(&a);
    queued(&b);
    w.send(&a, "<presence type='subscribe' to='bob@home.example'/>");
    let q = queued(&a);
    assert!(
        q.len() == 1
            && q[0].contains("type='subscribed'")
            && q[0].contains("from='bob@home.example'"),
        "{q:?}"
    );
    assert!(queued(&b).is_empty());
    let bob = crate::jid::BareJid::parse("bob@home.example").unwrap();
    let stored = w.storage.sub_state("alice", &bob).unwrap();
    assert_eq!(stored, crate::features::subscription::SubState::default());
    // dave is not in the household: his request goes through as ever.
    let d = w.bind("dave", "pc");
    w.send(&d, "<presence type='subscribe' to='bob@home.example'/>");
    assert!(queued(&b).iter().any(|s| s.contains("type='subscribe'")));
}

/// XEP-0012 §4 asks for a presence subscription before telling when someone was last
/// online: the household counts as one.
#[test]
fn members_may_ask_each_others_last_activity() {
    let w = household();
    let t = w.bind("thermo", "esp32");
    w.send(&t, "<presence/>");
    w.send(
        &t,
        "<presence type='unavailable'><status>asleep</status></presence>",
    );
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='l1' to='thermo@home.example'><query xmlns='jabber:iq:last'/></iq>",
    );
    assert!(
        out.contains("type='result'") && out.contains("asleep"),
        "{out}"
    );
    let d = w.bind("dave", "pc");
    let (out, _) = w.send(
        &d,
        "<iq type='get' id='l2' to='thermo@home.example'><query xmlns='jabber:iq:last'/></iq>",
    );
    assert!(out.contains("forbidden"), "{out}");
}

/// A member's account deleted while the server runs leaves the household with it (the
/// table cascades): the others are told as for `hearth household remove`.
#[test]
fn a_deleted_member_leaves() {
    use crate::storage::Accounts as _;
    let w = household();
    let mut watcher = smol::block_on(Watcher::start(w.im()));
    let a = w.bind("alice", "phone");
    roster_get(&w, &a, None);
    let t = w.bind("thermo", "esp32");
    w.send(&t, "<presence/>");
    w.send(&a, "<presence/>");
    queued(&a);
    smol::block_on(w.im().session_ended(&t.jid, t.id));
    queued(&a);
    w.storage.delete_account("thermo").unwrap();
    smol::block_on(watcher.check(w.im()));
    let q = queued(&a);
    assert!(
        q.iter().any(|s| s.contains("jid='thermo@home.example'")
            && s.contains("subscription='remove'")),
        "{q:?}"
    );
    let out = roster_get(&w, &a, None);
    assert!(!out.contains("thermo"), "{out}");
}

/// The roster view keeps the members in memory: a change made by another process
/// (`hearth household add`) shows once the watcher has read it, one made here at once.
#[test]
fn members_are_read_from_memory_and_refreshed_by_the_watcher() {
    let w = household();
    let mut watcher = smol::block_on(Watcher::start(w.im()));
    let a = w.bind("alice", "phone");
    let out = roster_get(&w, &a, None);
    assert!(!out.contains("dave@"), "{out}");
    // Another process on the same file.
    let dir = w.storage.path().parent().unwrap().to_owned();
    let other = crate::storage::Storage::open(&dir).unwrap();
    other.add_to_household("dave").unwrap();
    // Until the watcher reads it, the view is what was read last (no storage read).
    let out = roster_get(&w, &a, None);
    assert!(!out.contains("dave@"), "{out}");
    smol::block_on(watcher.check(w.im()));
    let out = roster_get(&w, &a, None);
    assert!(out.contains("jid='dave@home.example'"), "{out}");
    // This process: at once, before any watcher.
    w.storage.remove_from_household("dave").unwrap();
    let out = roster_get(&w, &a, None);
    assert!(!out.contains("dave@"), "{out}");
}
