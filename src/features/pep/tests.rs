//! XEP-0163's rules through the router, without sockets: a real router, the standard
//! registry and a temporary SQLite file (`router::im::tests`).

use crate::router::im::tests::{World, befriend, queued};

const AVATAR: &str = "urn:xmpp:avatar:metadata";

fn publish(node: &str, id: &str, payload: &str, options: &str) -> String {
    format!(
        "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='{node}'><item id='{id}'>{payload}</item></publish>{options}\
         </pubsub></iq>"
    )
}

fn options(fields: &[(&str, &str)]) -> String {
    let mut x = String::from(
        "<publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#publish-options</value></field>",
    );
    for (var, value) in fields {
        x.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    x.push_str("</x></publish-options>");
    x
}

fn items(owner: &str, node: &str, extra: &str) -> String {
    format!(
        "<iq type='get' id='i' to='{owner}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <items node='{node}'{extra}/></pubsub></iq>"
    )
}

fn meta(n: u32) -> String {
    format!("<metadata xmlns='{AVATAR}'><info id='{n}' bytes='{n}' type='image/png'/></metadata>")
}

#[test]
fn publish_creates_the_node_and_the_owner_reads_it_back() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(&a, &publish(AVATAR, "abc", &meta(1), ""));
    assert!(out.contains("type='result'"), "{out}");
    assert!(out.contains("<item id='abc'/>"), "{out}");
    let (out, _) = w.send(&a, &items("alice@home.example", AVATAR, ""));
    assert!(out.contains("<item id='abc'><metadata"), "{out}");
    // Without an id, the server makes one up and says which.
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='urn:xmpp:nick'><item><nick xmlns='http://jabber.org/protocol/nick'>Al</nick>\
         </item></publish></pubsub></iq>",
    );
    let id = out
        .split("<item id='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    assert!(id.len() >= 16, "{out}");
}

#[test]
fn presence_access_needs_a_subscription() {
    let w = World::new(&["alice", "bob", "mallory"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    let m = w.bind("mallory", "pc");
    befriend(&w, &a, &b);
    w.send(&a, &publish(AVATAR, "1", &meta(1), ""));
    let (out, _) = w.send(&b, &items("alice@home.example", AVATAR, ""));
    assert!(out.contains("<item id='1'>"), "{out}");
    let (out, _) = w.send(&m, &items("alice@home.example", AVATAR, ""));
    assert!(out.contains("<not-authorized"), "{out}");
    assert!(out.contains("<presence-subscription-required"), "{out}");
    assert!(out.contains("type='auth'"), "{out}");
    // Nor may mallory subscribe, or see the node in disco#items.
    let (out, _) = w.send(
        &m,
        &format!(
            "<iq type='set' id='s' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <subscribe node='{AVATAR}' jid='mallory@home.example'/></pubsub></iq>"
        ),
    );
    assert!(out.contains("<not-authorized"), "{out}");
    let disco = "<iq type='get' id='d' to='alice@home.example'>\
                 <query xmlns='http://jabber.org/protocol/disco#items'/></iq>";
    let (out, _) = w.send(&m, disco);
    assert!(!out.contains(AVATAR), "{out}");
    let (out, _) = w.send(&b, disco);
    assert!(out.contains(&format!("node='{AVATAR}'")), "{out}");
}

#[test]
fn open_nodes_are_for_anyone_and_whitelists_for_members() {
    let w = World::new(&["alice", "bob", "mallory"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    let m = w.bind("mallory", "pc");
    befriend(&w, &a, &b);
    let devices = "eu.siacs.conversations.axolotl.devicelist";
    let list = "<list xmlns='eu.siacs.conversations.axolotl'><device id='42'/></list>";
    let (out, _) = w.send(
        &a,
        &publish(
            devices,
            "current",
            list,
            &options(&[("pubsub#access_model", "open")]),
        ),
    );
    assert!(out.contains("type='result'"), "{out}");
    let (out, _) = w.send(&m, &items("alice@home.example", devices, ""));
    assert!(out.contains("<device id='42'/>"), "{out}");
    // XEP-0223: private data, even from a contact.
    let private = "storage:bookmarks";
    let (out, _) = w.send(
        &a,
        &publish(
            private,
            "current",
            "<storage xmlns='storage:bookmarks'/>",
            &options(&[
                ("pubsub#persist_items", "true"),
                ("pubsub#access_model", "whitelist"),
            ]),
        ),
    );
    assert!(out.contains("type='result'"), "{out}");
    let (out, _) = w.send(&b, &items("alice@home.example", private, ""));
    assert!(out.contains("<not-allowed"), "{out}");
    assert!(out.contains("<closed-node"), "{out}");
    // Made a member, bob reads it; made an outcast, not even an open node.
    let (out, _) = w.send(
        &a,
        &format!(
            "<iq type='set' id='a'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>\
             <affiliations node='{private}'><affiliation jid='bob@home.example' affiliation='member'/>\
             </affiliations></pubsub></iq>"
        ),
    );
    assert!(out.contains("type='result'"), "{out}");
    let (out, _) = w.send(&b, &items("alice@home.example", private, ""));
    assert!(out.contains("<storage"), "{out}");
    w.send(
        &a,
        &format!(
            "<iq type='set' id='a'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>\
             <affiliations node='{devices}'><affiliation jid='mallory@home.example' affiliation='outcast'/>\
             </affiliations></pubsub></iq>"
        ),
    );
    let (out, _) = w.send(&m, &items("alice@home.example", devices, ""));
    assert!(out.contains("<forbidden"), "{out}");
}

#[test]
fn preconditions_must_match_an_existing_node() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    let node = "urn:xmpp:bookmarks:1";
    let conference = "<conference xmlns='urn:xmpp:bookmarks:1' name='Family'/>";
    let opts = options(&[
        ("pubsub#access_model", "whitelist"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
    ]);
    let (out, _) = w.send(
        &a,
        &publish(node, "family@conference.home.example", conference, &opts),
    );
    assert!(out.contains("type='result'"), "{out}");
    // The same preconditions again: met.
    let (out, _) = w.send(
        &a,
        &publish(node, "cousins@conference.home.example", conference, &opts),
    );
    assert!(out.contains("type='result'"), "{out}");
    // A different one: refused, nothing stored.
    let (out, _) = w.send(
        &a,
        &publish(
            node,
            "x",
            conference,
            &options(&[("pubsub#access_model", "open")]),
        ),
    );
    assert!(out.contains("<conflict"), "{out}");
    assert!(out.contains("<precondition-not-met"), "{out}");
    let (out, _) = w.send(&a, &items("alice@home.example", node, ""));
    assert_eq!(out.matches("<item ").count(), 2, "{out}");
    // max_items=max keeps both; the configuration form says so.
    let (out, _) = w.send(
        &a,
        &format!(
            "<iq type='get' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>\
             <configure node='{node}'/></pubsub></iq>"
        ),
    );
    assert!(out.contains("<value>whitelist</value>"), "{out}");
    assert!(out.contains("<value>max</value>"), "{out}");
    // An unknown precondition on a new node is refused rather than ignored.
    let (out, _) = w.send(
        &a,
        &publish(
            "other",
            "1",
            conference,
            &options(&[("pubsub#colour", "red")]),
        ),
    );
    assert!(out.contains("<precondition-not-met"), "{out}");
}

#[test]
fn only_the_owner_publishes_and_payloads_are_checked() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    let (out, _) = w.send(
        &b,
        &publish(AVATAR, "1", &meta(1), "").replace("id='p'", "id='p' to='alice@home.example'"),
    );
    assert!(out.contains("<forbidden"), "{out}");
    for (payload, condition) in [
        ("", "<payload-required"),
        (&*format!("{}{}", meta(1), meta(2)), "<invalid-payload"),
    ] {
        let (out, _) = w.send(&a, &publish(AVATAR, "1", payload, ""));
        assert!(out.contains("<bad-request"), "{out}");
        assert!(out.contains(condition), "{out}");
    }
    let big = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        "A".repeat(220 * 1024)
    );
    let (out, _) = w.send(&a, &publish("urn:xmpp:avatar:data", "1", &big, ""));
    assert!(out.contains("<payload-too-big"), "{out}");
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish><item/></publish></pubsub></iq>",
    );
    assert!(out.contains("<nodeid-required"), "{out}");
    // Nothing was created by the refused requests.
    let (out, _) = w.send(&a, &items("alice@home.example", AVATAR, ""));
    assert!(out.contains("<item-not-found"), "{out}");
}

#[test]
fn a_node_keeps_its_newest_max_items() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    let opts = options(&[("pubsub#max_items", "2")]);
    for n in 1..=3 {
        w.send(
            &a,
            &publish("urn:example:log", &n.to_string(), &meta(n), &opts),
        );
    }
    let (out, _) = w.send(&a, &items("alice@home.example", "urn:example:log", ""));
    assert!(!out.contains("<item id='1'>"), "{out}");
    assert!(
        out.contains("<item id='2'>") && out.contains("<item id='3'>"),
        "{out}"
    );
    let (out, _) = w.send(
        &a,
        &items("alice@home.example", "urn:example:log", " max_items='1'"),
    );
    assert_eq!(out.matches("<item ").count(), 1, "{out}");
    assert!(out.contains("<item id='3'>"), "{out}");
}

/// XEP-0163 §4.3: a contact whose caps (never seen before) ask for the node is asked
/// for its features, gets the last item once it answered, and every new one after.
#[test]
fn notifications_follow_caps_and_the_last_item_comes_on_presence() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    befriend(&w, &a, &b);
    w.send(&a, &publish(AVATAR, "1", &meta(1), ""));
    w.send(&a, "<presence/>");
    queued(&a);
    // Bob's client: the §5.2 example's features plus avatar notifications. Its hash is
    // made up (a wrong hash serves only the client that sent it).
    w.send(
        &b,
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
         node='https://client.example' ver='made-up='/></presence>",
    );
    let asked = queued(&b);
    let query = asked
        .iter()
        .find(|s| s.contains("disco#info") && s.contains("https://client.example#made-up="))
        .unwrap_or_else(|| panic!("no caps query in {asked:?}"));
    assert!(query.contains("from='home.example'"), "{query}");
    let id = query
        .split("id='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    w.send(
        &b,
        &format!(
            "<iq type='result' id='{id}' to='home.example'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='https://client.example#made-up='>\
             <identity category='client' type='pc'/>\
             <feature var='{AVATAR}+notify'/></query></iq>"
        ),
    );
    let got = queued(&b);
    let last: Vec<&String> = got.iter().filter(|s| s.contains("pubsub#event")).collect();
    assert_eq!(last.len(), 1, "{got:?}");
    assert!(last[0].contains("from='alice@home.example'"), "{}", last[0]);
    assert!(last[0].contains("<item id='1'>"), "{}", last[0]);
    assert!(last[0].contains("type='headline'"), "{}", last[0]);
    // A new item reaches bob; a node he did not ask for does not.
    w.send(&a, &publish(AVATAR, "2", &meta(2), ""));
    w.send(
        &a,
        &publish(
            "urn:xmpp:nick",
            "1",
            "<nick xmlns='http://jabber.org/protocol/nick'>A</nick>",
            "",
        ),
    );
    let got = queued(&b);
    let events: Vec<&String> = got.iter().filter(|s| s.contains("pubsub#event")).collect();
    assert_eq!(events.len(), 1, "{got:?}");
    assert!(events[0].contains("<item id='2'>"), "{}", events[0]);
    // Retracted: bob is told.
    w.send(
        &a,
        &format!(
            "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <retract node='{AVATAR}'><item id='2'/></retract></pubsub></iq>"
        ),
    );
    let got = queued(&b);
    assert!(
        got.iter().any(|s| s.contains("<retract id='2'/>")),
        "{got:?}"
    );
    // Bob goes away: nothing more for him.
    w.send(&b, "<presence type='unavailable'/>");
    queued(&b);
    w.send(&a, &publish(AVATAR, "3", &meta(3), ""));
    assert!(queued(&b).iter().all(|s| !s.contains("pubsub#event")));
}

#[test]
fn a_spoofed_caps_answer_is_ignored() {
    let w = World::new(&["alice", "bob", "mallory"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    let m = w.bind("mallory", "pc");
    befriend(&w, &a, &b);
    w.send(&a, &publish(AVATAR, "1", &meta(1), ""));
    w.send(
        &b,
        "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
    );
    let asked = queued(&b);
    let query = asked.iter().find(|s| s.contains("disco#info")).unwrap();
    let id = query
        .split("id='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    // Mallory answers in bob's place: not taken.
    w.send(
        &m,
        &format!(
            "<iq type='result' id='{id}' to='home.example'>\
             <query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='{AVATAR}+notify'/></query></iq>"
        ),
    );
    assert!(queued(&b).iter().all(|s| !s.contains("pubsub#event")));
    assert!(queued(&m).iter().all(|s| !s.contains("pubsub#event")));
}

#[test]
fn explicit_subscribers_are_notified_and_told_of_deletion() {
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    w.send(
        &a,
        &publish(
            "urn:example:news",
            "1",
            &meta(1),
            &options(&[("pubsub#access_model", "open")]),
        ),
    );
    let (out, _) = w.send(
        &b,
        "<iq type='set' id='s' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <subscribe node='urn:example:news' jid='bob@home.example/pc'/></pubsub></iq>",
    );
    assert!(out.contains("subscription='subscribed'"), "{out}");
    // The last item follows the subscription.
    assert!(queued(&b).iter().any(|s| s.contains("<item id='1'>")));
    // Someone else's JID cannot be subscribed.
    let (out, _) = w.send(
        &b,
        "<iq type='set' id='s' to='alice@home.example'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <subscribe node='urn:example:news' jid='carol@home.example'/></pubsub></iq>",
    );
    assert!(out.contains("<invalid-jid"), "{out}");
    w.send(&a, &publish("urn:example:news", "2", &meta(2), ""));
    assert!(queued(&b).iter().any(|s| s.contains("<item id='2'>")));
    let (out, _) = w.send(
        &a,
        "<iq type='set' id='d'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>\
         <delete node='urn:example:news'/></pubsub></iq>",
    );
    assert!(out.contains("type='result'"), "{out}");
    assert!(
        queued(&b)
            .iter()
            .any(|s| s.contains("<delete node='urn:example:news'/>"))
    );
    let (out, _) = w.send(&b, &items("alice@home.example", "urn:example:news", ""));
    assert!(out.contains("<item-not-found"), "{out}");
}

#[test]
fn the_quota_and_the_node_limit_hold() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    // 16 MiB by default: 150 items of 150 KiB do not fit.
    let big = format!(
        "<data xmlns='urn:xmpp:avatar:data'>{}</data>",
        "A".repeat(150 * 1024)
    );
    let opts = options(&[("pubsub#max_items", "max")]);
    let mut refused = None;
    for n in 0..150 {
        let (out, _) = w.send(&a, &publish("urn:example:big", &n.to_string(), &big, &opts));
        if !out.contains("type='result'") {
            refused = Some((n, out));
            break;
        }
    }
    let (n, out) = refused.expect("the quota never refused");
    assert!(out.contains("<resource-constraint"), "{out}");
    assert!((100..=110).contains(&n), "refused at {n}");
    // Retracting makes room again.
    w.send(
        &a,
        "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <retract node='urn:example:big'><item id='0'/></retract></pubsub></iq>",
    );
    let (out, _) = w.send(&a, &publish("urn:example:big", "again", &big, &opts));
    assert!(out.contains("type='result'"), "{out}");
    for n in 0..200 {
        let (out, _) = w.send(
            &a,
            &publish(&format!("urn:example:n{n}"), "1", &meta(1), ""),
        );
        if !out.contains("type='result'") {
            assert!(out.contains("<max-nodes-exceeded"), "{out}");
            assert_eq!(n, 127, "one node exists already");
            return;
        }
    }
    panic!("the node limit never refused");
}

#[test]
fn the_account_announces_pep() {
    let w = World::new(&["alice"]);
    let a = w.bind("alice", "phone");
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='d' to='alice@home.example'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(
        out.contains("<identity category='pubsub' type='pep'/>"),
        "{out}"
    );
    assert!(out.contains("pubsub#publish-options"), "{out}");
    // Not on the server.
    let (out, _) = w.send(
        &a,
        "<iq type='get' id='d' to='home.example'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    assert!(!out.contains("type='pep'"), "{out}");
}

/// RFC 6121 §3.1.5: when a subscription is approved, the contact's server sends the
/// contact's current presence to the user. That presence reaches the user's PEP service
/// too: a contact already online before the subscription gets notifications at once, not
/// only after its next presence change (what aioxmpp's AvatarService found).
#[test]
fn a_contact_online_before_the_subscription_is_notified() {
    // XEP-0115 §5.1 of "client/pc//<urn:xmpp:avatar:metadata+notify<".
    const VER: &str = "1vq/lNJHZydQjsudiA2TElgzskU=";
    let w = World::new(&["alice", "bob"]);
    let a = w.bind("alice", "phone");
    let b = w.bind("bob", "pc");
    w.send(&a, "<presence/>");
    w.send(
        &b,
        &format!(
            "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
             node='https://client.example' ver='{VER}'/></presence>"
        ),
    );
    // bob's own PEP service asks what the hash means; the answer verifies.
    let asked = queued(&b);
    let query = asked
        .iter()
        .find(|s| s.contains("disco#info"))
        .unwrap_or_else(|| panic!("no caps query in {asked:?}"));
    let id = query
        .split("id='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap();
    w.send(
        &b,
        &format!(
            "<iq type='result' id='{id}' to='home.example'>\
             <query xmlns='http://jabber.org/protocol/disco#info' \
             node='https://client.example#{VER}'>\
             <identity category='client' type='pc'/>\
             <feature var='{AVATAR}+notify'/></query></iq>"
        ),
    );
    queued(&a);
    queued(&b);
    // Now they become contacts; bob sends no presence of his own after that.
    befriend(&w, &a, &b);
    w.send(&a, &publish(AVATAR, "1", &meta(1), ""));
    let got = queued(&b);
    let events: Vec<&String> = got.iter().filter(|s| s.contains("pubsub#event")).collect();
    assert_eq!(events.len(), 1, "{got:?}");
    assert!(events[0].contains("<item id='1'>"), "{}", events[0]);
}
