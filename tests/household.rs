//! The household (hearth's shared roster group) end to end: three people on a real
//! client library (slixmpp, tests/clients/xmpp_client.py) and a thermometer on the raw
//! client, put in the household with `hearth household add`, see each other's presence
//! and status text from their first login, with `subscription='both'` in the
//! "Household" roster group, and nobody ever sees a subscription stanza (one of them
//! made with `hearth user add --household`). Then
//! `hearth household remove` takes the thermometer out while it is online: the people
//! get a roster push removing it and its unavailable presence, and it theirs.

mod common;

use common::client::{Conn, NS_CLIENT};
use common::clients::slixmpp;
use common::im::{NS_ROSTER, expect_presence, roster_get};
use common::xml::Node;
use common::{Server, ServerOpts};
use std::process::{Command, Stdio};
use std::time::Duration;

const PW: &str = "a household password";
const WAIT: Duration = Duration::from_secs(20);
const PEOPLE: [&str; 3] = ["alice", "bob", "carol"];
const TEMPERATURE: &str = "21.5 °C";

/// Runs `hearth household …` on the server's configuration.
fn household(server: &Server, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .arg("household")
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run hearth household");
    assert!(
        out.status.success(),
        "hearth household {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn login(server: &Server, user: &str, resource: &str) -> Conn {
    Conn::login(
        server.c2s_addr(),
        server.domain(),
        &server.cert_path(),
        user,
        PW,
        Some(resource),
    )
}

fn is_subscription(el: &Node) -> bool {
    el.name == "presence"
        && matches!(
            el.attr("type"),
            Some("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")
        )
}

fn status_of(el: &Node) -> String {
    el.child("status", NS_CLIENT)
        .map(|s| s.text.clone())
        .unwrap_or_default()
}

#[test]
fn three_people_and_a_thermometer() {
    let server = Server::start(ServerOpts::default());
    for u in ["alice", "bob", "thermo", "dave"] {
        server.add_user(u, PW);
    }
    for u in ["alice", "bob", "thermo"] {
        household(&server, &["add", u]);
    }
    // carol's account is made in the household.
    let pw_file = server.scratch_dir().join("carol-password");
    std::fs::write(&pw_file, PW).expect("write carol's password");
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["user", "add", "carol", "--household", "--password-file"])
        .arg(&pw_file)
        .arg("--config")
        .arg(server.config_path())
        .stdin(Stdio::null())
        .output()
        .expect("cannot run hearth user add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = household(&server, &["list"]);
    let d = server.domain();
    assert_eq!(
        listed,
        format!("alice@{d}\nbob@{d}\ncarol@{d}\nthermo@{d}\n")
    );

    // The sensor: the raw client, online first, with its roster and a status.
    let mut thermo = login(&server, "thermo", "esp32");
    let roster = roster_get(&mut thermo, None);
    let query = roster.child("query", NS_ROSTER).expect("a roster");
    let items: Vec<&Node> = query.children.iter().collect();
    assert_eq!(items.len(), 3, "{roster}");
    for it in &items {
        assert_eq!(it.attr("subscription"), Some("both"), "{roster}");
        assert_eq!(
            it.child("group", NS_ROSTER).map(|g| g.text.as_str()),
            Some("Household"),
            "{roster}"
        );
    }
    thermo.send(&format!(
        "<presence><status>{TEMPERATURE}</status></presence>"
    ));

    // The people, on slixmpp, all at once; each waits for the other two and the sensor.
    let mut running = Vec::new();
    for p in PEOPLE {
        let mut args: Vec<String> = vec![
            "household".into(),
            "--status".into(),
            format!("{p} is home"),
            "--expect".into(),
            format!("{}={TEMPERATURE}", server.jid("thermo")),
            "--linger".into(),
            "2".into(),
        ];
        for other in PEOPLE.iter().filter(|o| **o != p) {
            args.push("--expect".into());
            args.push(format!("{}={other} is home", server.jid(other)));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let client = slixmpp(&server, p, PW, "SCRAM-SHA-256")
            .resource("phone")
            .spawn(&args);
        running.push((p, client));
    }
    for (p, client) in &mut running {
        let seen = client.wait_for_event("household", WAIT);
        let roster = &seen["roster"];
        for other in PEOPLE.iter().chain(&["thermo"]).filter(|o| *o != p) {
            let item = &roster[&server.jid(other)];
            assert_eq!(item["subscription"], "both", "{p}: {seen}");
            assert_eq!(item["groups"][0], "Household", "{p}: {seen}");
        }
        assert!(
            roster.get(server.jid("dave")).is_none(),
            "dave is not in the household: {seen}"
        );
        assert_eq!(seen["seen"][server.jid("thermo")], TEMPERATURE, "{seen}");
    }
    for (p, client) in running {
        let run = client.finish();
        run.assert_ok();
        assert!(
            run.event("subscription_stanza").is_none(),
            "{p} saw a subscription stanza:\n{run}"
        );
    }

    // The sensor saw each person arrive (its probes at login were answered with their
    // unavailable presence, none being online yet), and no subscription stanza.
    let mut arrived: Vec<String> = Vec::new();
    while arrived.len() < PEOPLE.len() {
        let el = thermo.expect_element("the people's presence");
        assert!(!is_subscription(&el), "the sensor got {el}");
        let from_person = el
            .attr("from")
            .is_some_and(|f| PEOPLE.iter().any(|p| f.starts_with(&server.jid(p))));
        // A presence may come twice: when the server notices the `hearth household
        // add` only after some logged in, it sends their presence again (§3.1.5).
        let status = status_of(&el);
        if el.name == "presence"
            && from_person
            && el.attr("type").is_none()
            && !arrived.contains(&status)
        {
            arrived.push(status);
        }
    }
    arrived.sort();
    assert_eq!(arrived, ["alice is home", "bob is home", "carol is home"]);

    // Alice comes back on the raw client; then the sensor is taken out of the household.
    let mut alice = login(&server, "alice", "laptop");
    roster_get(&mut alice, None);
    alice.send("<presence/>");
    let t = expect_presence(&mut alice, &server.jid("thermo"), None);
    assert_eq!(status_of(&t), TEMPERATURE);
    expect_presence(&mut thermo, &server.jid("alice"), None);
    household(&server, &["remove", "thermo"]);
    // The server notices within its poll interval: a push, then thermo's unavailable.
    let push = alice.expect_matching("the push removing thermo", |el| {
        el.name == "iq" && el.attr("type") == Some("set")
    });
    let item = push
        .child("query", NS_ROSTER)
        .and_then(|q| q.child("item", NS_ROSTER))
        .unwrap_or_else(|| panic!("{push}"));
    assert_eq!(item.attr("jid"), Some(server.jid("thermo").as_str()));
    assert_eq!(item.attr("subscription"), Some("remove"));
    let id = push.attr("id").unwrap_or_default().to_owned();
    alice.send(&format!("<iq type='result' id='{id}'/>"));
    expect_presence(&mut alice, &server.jid("thermo"), Some("unavailable"));
    // (What the slixmpp sessions' ends sent it may still be waiting before.)
    let laptop = format!("{}/laptop", server.jid("alice"));
    thermo.expect_matching("alice's unavailable", |el| {
        assert!(!is_subscription(el), "the sensor got {el}");
        el.name == "presence"
            && el.attr("type") == Some("unavailable")
            && el.attr("from") == Some(laptop.as_str())
    });
    // From now on the sensor's readings stay its own.
    thermo.send("<presence><status>22 °C</status></presence>");
    let after = common::im::drain(&mut alice);
    assert!(
        after.iter().all(|el| el.name != "presence"),
        "alice still sees the sensor: {after:?}"
    );
    assert_eq!(
        household(&server, &["list"]),
        format!("alice@{d}\nbob@{d}\ncarol@{d}\n")
    );
}
