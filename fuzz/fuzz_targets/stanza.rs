//! Stanzas from arbitrary bytes after a stream header: the framer's
//! elements go through `Stanza::from_client` and the router (with the
//! server's features), and every element written back out parses to the
//! same element (the writer escapes everything it writes).
#![no_main]

use std::sync::Arc;

use hearth::features::Features;
use hearth::ns;
use hearth::router::{Router, session_queue};
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

fuzz_target!(|data: &[u8]| {
    let router = Router::new(Arc::from("home.local"), Features::standard());
    let (tx, rx) = session_queue(64 * 1024);
    let Ok(bound) = router.bind("ann", Some("phone".into()), tx) else {
        return;
    };
    let me = bound.jid;
    let mut framer = Framer::new(Limits::default());
    framer.feed(HEADER.as_bytes()).unwrap();
    if framer.feed(data).is_err() {
        return;
    }
    while let Ok(Some(ev)) = framer.next_event() {
        let Event::Stanza(mut el) = ev else { continue };
        assert_eq!(reparse(&el), el);
        el.set_attr("from", me.to_string());
        match Stanza::from_client(el) {
            // What the router hands back is a message for offline storage,
            // which needs the async IM path; here it is just dropped.
            Ok(stanza) => drop(router.route(&me, stanza)),
            Err(Rejected::Stream(_)) => {}
            Err(Rejected::Stanza(err, el)) => {
                if let Some(reply) = err.reply_to(&el) {
                    assert_eq!(reparse(&reply), reply);
                }
            }
        }
        // Whatever the router answered must be well-formed too.
        while let Ok(msg) = rx.try_recv() {
            if let hearth::router::ToSession::Stanza(xml) = msg {
                let mut f = Framer::new(Limits::default());
                f.feed(HEADER.as_bytes()).unwrap();
                f.feed(xml.as_bytes())
                    .unwrap_or_else(|e| panic!("router output {xml:?} does not parse: {e}"));
            }
        }
    }
});
