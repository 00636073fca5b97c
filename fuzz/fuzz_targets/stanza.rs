//! Stanzas from arbitrary bytes after a stream header: the framer's
//! elements go through `Stanza::from_client` and a local session's whole way
//! (`router::im`: the modules' hooks and iq handlers, rosters, presence, the
//! router) against a real SQLite file made once per process, and every
//! element written back out parses to the same element (the writer escapes
//! everything it writes). An input that starts with byte 1 sends its stanzas
//! from another server's user instead (`Im::route_remote`, as an s2s link
//! would), and whatever the server hands its federation links must be
//! well-formed too.
#![no_main]

use std::sync::{Arc, OnceLock};

use hearth::features::Registry;
use hearth::ns;
use hearth::jid::Jid;
use hearth::router::im::Im;
use hearth::router::{Remote, Router, session_queue};
use hearth::storage::{Accounts as _, Storage};
use hearth::stanza::{Rejected, Stanza};
use hearth::xml::{Element, Event, Framer, Limits};
use libfuzzer_sys::fuzz_target;

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='home.local' version='1.0'>";

fn reparse(el: &Element) -> Element {
    let xml = el.to_xml_in(ns::CLIENT);
    let mut f = Framer::new(Limits::default());
    f.feed(HEADER.as_bytes()).unwrap();
    f.feed(xml.as_bytes())
        .unwrap_or_else(|e| panic!("own output {xml:?} does not parse: {e}"));
    assert!(matches!(f.next_event(), Ok(Some(Event::Open(_)))));
    match f.next_event() {
        Ok(Some(Event::Stanza(back))) => back,
        other => panic!("own output {xml:?} gave {other:?}"),
    }
}

/// The federation links: what the server sends another server must be well-formed.
struct Links;

impl Remote for Links {
    fn send(&self, _router: &Router, _domain: &str, stanza: Stanza) {
        well_formed(&stanza.el.to_xml_in(ns::CLIENT));
    }
}

/// The sender of a remote input: a user on another server.
const EVE: &str = "eve@remote.local/x";

/// The server's state for every input: a router with federation links, the modules and a
/// database with the account `ann` (rosters and blocklists written by one input stay for
/// the next, within the quotas).
struct World {
    router: Router,
    storage: Storage,
    modules: Registry,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hearth-fuzz-stanza-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::open(&dir).unwrap().with_scram_keys(false);
        storage.create_account("ann", "pw").unwrap();
        storage.create_account("bob", "pw").unwrap();
        World {
            router: Router::new(Arc::from("home.local")).with_remote(Arc::new(Links)),
            storage,
            modules: Registry::standard(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let (remote, data) = match data.split_first() {
        Some((1, rest)) => (true, rest),
        _ => (false, data),
    };
    let eve = Jid::parse(EVE).unwrap();
    let w = world();
    let router = &w.router;
    let im = Im {
        router,
        storage: &w.storage,
        modules: &w.modules,
        conn: 0,
    };
    let (tx, rx) = session_queue(64 * 1024);
    let Ok(bound) = router.bind("ann", Some("phone".into()), tx) else {
        return;
    };
    let me = bound.jid;
    let id = bound.id;
    let mut out = String::new();
    let mut framer = Framer::new(Limits::default());
    framer.feed(HEADER.as_bytes()).unwrap();
    if framer.feed(data).is_err() {
        return;
    }
    while let Ok(Some(ev)) = framer.next_event() {
        let Event::Stanza(mut el) = ev else { continue };
        assert_eq!(reparse(&el), el);
        el.set_attr("from", if remote { EVE } else { me.as_str() });
        match Stanza::from_client(el) {
            Ok(stanza) if remote => smol::block_on(im.route_remote(&eve, stanza)),
            Ok(stanza) => {
                let _routed = smol::block_on(im.route(&me, stanza, &mut out));
            }
            Err(Rejected::Stream(_)) => {}
            Err(Rejected::Stanza(err, el)) => {
                if let Some(reply) = err.reply_to(&el) {
                    assert_eq!(reparse(&reply), reply);
                }
            }
        }
        // Whatever the server answered must be well-formed too.
        while let Ok(msg) = rx.try_recv() {
            if let hearth::router::ToSession::Stanza(out) = msg {
                let xml = out.el.to_xml_in(ns::CLIENT);
                assert_eq!(xml.len(), out.len, "the queue's measure of {xml:?}");
                well_formed(&xml);
            }
        }
        well_formed(&std::mem::take(&mut out));
    }
    smol::block_on(im.session_ended(&me, id));
});

fn well_formed(xml: &str) {
    let mut f = Framer::new(Limits::default());
    f.feed(HEADER.as_bytes()).unwrap();
    f.feed(xml.as_bytes())
        .unwrap_or_else(|e| panic!("server output {xml:?} does not parse: {e}"));
}
