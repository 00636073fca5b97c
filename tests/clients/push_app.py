#!/usr/bin/python3
"""A XEP-0357 app server for tests/push.rs: an external component (XEP-0114) on slixmpp's
own ComponentXMPP, reading what it gets with slixmpp's xep_0060 (pubsub) and xep_0004
(data forms) stanza plugins.

It connects to the component port with its domain and secret, prints {"event": "ready"},
then for every pubsub publish it receives (XEP-0357 §7: a <notification/> in an item,
with publish-options) prints {"event": "push", "from", "to", "node", "summary": {var:
value}, "options": {var: value}} and answers with a result, or with an error of type
cancel and the condition given by --fail NODE=CONDITION for that node. Every other iq
set is answered with service-unavailable (and printed as "other").

Lines on stdout are JSON objects with an "event" key; slixmpp's log goes to stderr.
Exit status: 0 it ran until --seconds passed, 1 the handshake failed.
"""

import argparse
import asyncio
import json
import logging
import sys

from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import StanzaPath

NS_PUSH = "urn:xmpp:push:0"


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def form_values(form):
    """A data form's fields as {var: value or [values]}."""
    if form is None:
        return None
    out = {}
    for var, value in form.get_values().items():
        out[var] = value
    return out


class AppServer(ComponentXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.secret, args.host, args.port)
        self.accepted = False
        self.fail = dict(f.split("=", 1) for f in args.fail)
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0060")
        self.add_event_handler("session_start", self.started)
        self.register_handler(Callback(
            "push publish", StanzaPath("iq@type=set/pubsub/publish"), self.on_publish))

    def started(self, _event):
        self.accepted = True
        emit("ready", jid=str(self.boundjid))

    def on_publish(self, iq):
        publish = iq["pubsub"]["publish"]
        node = publish["node"]
        summary = None
        for item in publish:
            payload = item["payload"]
            if payload is not None and payload.tag == "{%s}notification" % NS_PUSH:
                x = payload.find("{jabber:x:data}x")
                summary = form_values(Form(xml=x)) if x is not None else {}
        options = None
        if iq["pubsub"].xml.find("{http://jabber.org/protocol/pubsub}publish-options") is not None:
            # An extension plugin: the interface gives the form itself (a xep_0004 Form).
            options = form_values(iq["pubsub"]["publish_options"])
        emit("push", frm=str(iq["from"]), to=str(iq["to"]), node=node, summary=summary,
             options=options, id=iq["id"])
        condition = self.fail.get(node)
        if condition:
            err = iq.reply(clear=True)
            err["type"] = "error"
            err["error"]["type"] = "cancel"
            err["error"]["condition"] = condition
            err.send()
        else:
            iq.reply(clear=True).send()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--fail", action="append", default=[], help="NODE=CONDITION")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    xmpp = AppServer(args)
    xmpp.connect()
    loop = asyncio.get_event_loop()
    loop.call_later(args.seconds, loop.stop)
    loop.run_forever()
    sys.exit(0 if xmpp.accepted else 1)


if __name__ == "__main__":
    main()
