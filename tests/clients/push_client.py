#!/usr/bin/python3
"""A phone that enables XEP-0357 push notifications, for tests/push.rs, on slixmpp.

slixmpp (Debian's 1.8, and upstream) has no XEP-0357 plugin, nor does aioxmpp 0.13 or
nbxmpp: the <enable/>/<disable/> payload is built here as the XEP's §5/§6 examples show,
its publish-options form with slixmpp's own xep_0004 Form, and sent with slixmpp's Iq.
The rest is slixmpp's: login (STARTTLS, trusting --cafile), XEP-0352 (xep_0352) and
XEP-0198 with resumption (xep_0198).

  --enable NODE / --disable NODE   to the app server --app (repeatable, in order)
  --then offline    close the stream cleanly (the account goes offline)
  --then stay       stay online and active, printing messages, for --seconds
  --then inactive   send <inactive/> (xep_0352), stay for --seconds
  --then drop       with stream management resumable, cut the TCP connection without
                    closing the stream (the session hibernates, XEP-0198 §5)

Events: "ready", "enabled"/"disabled" (node), "iq_error" (node, condition), "inactive",
"dropped", "message" (body); exit 0 when every request was answered with a result.
"""

import argparse
import asyncio
import json
import logging
import sys
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.plugins.xep_0004 import Form

NS_PUSH = "urn:xmpp:push:0"


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Phone(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.ok = True
        self.done = None
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0352")
        if args.then == "drop":
            self.register_plugin("xep_0198", {"allow_resume": True})
            self.add_event_handler("sm_enabled", self.on_sm_enabled)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.sm_ready = asyncio.Event() if args.then == "drop" else None

    def open(self):
        if hasattr(self, "enable_direct_tls"):
            self.enable_direct_tls = False
            self.enable_starttls = True
            self.enable_plaintext = False
            self.connect(self.args.host, self.args.port)
        else:
            self.connect((self.args.host, self.args.port), use_ssl=False, force_starttls=True)

    def on_sm_enabled(self, _stanza):
        self.sm_ready.set()

    def on_message(self, msg):
        if msg["body"]:
            emit("message", body=msg["body"], frm=str(msg["from"]))

    def request(self, kind, node):
        iq = self.Iq()
        iq["type"] = "set"
        el = ET.Element("{%s}%s" % (NS_PUSH, kind), {"jid": self.args.app, "node": node})
        if kind == "enable":
            form = Form()
            form["type"] = "submit"
            form.add_field(var="FORM_TYPE", ftype="hidden",
                           value="http://jabber.org/protocol/pubsub#publish-options")
            form.add_field(var="secret", value=self.args.secret)
            el.append(form.xml)
        iq.append(el)
        return iq

    async def on_start(self, _event):
        self.send_presence()
        emit("ready", jid=str(self.boundjid))
        for kind, node in self.args.requests:
            try:
                await self.request(kind, node).send(timeout=10)
                emit(kind + "d", node=node)
            except slixmpp.exceptions.IqError as e:
                self.ok = False
                emit("iq_error", node=node, condition=e.iq["error"]["condition"])
            except slixmpp.exceptions.IqTimeout:
                self.ok = False
                emit("iq_timeout", node=node)
        then = self.args.then
        if then == "offline":
            await self.disconnect(wait=2.0)
        elif then == "inactive":
            self.plugin["xep_0352"].send_inactive()
            emit("inactive")
            await asyncio.sleep(self.args.seconds)
        elif then == "drop":
            await asyncio.wait_for(self.sm_ready.wait(), 10)
            # Give the server the last <r/>/<a/> round, then vanish without </stream>.
            await asyncio.sleep(0.5)
            self.transport.abort()
            emit("dropped")
        else:
            await asyncio.sleep(self.args.seconds)
        self.done.set_result(0 if self.ok else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--app", required=True, help="the app server's JID")
    p.add_argument("--secret", default="app-secret")
    p.add_argument("--enable", action="append", default=[])
    p.add_argument("--disable", action="append", default=[])
    p.add_argument("--then", choices=["offline", "stay", "inactive", "drop"], default="offline")
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    args.requests = [("enable", n) for n in args.enable] + [("disable", n) for n in args.disable]
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    phone = Phone(args)
    phone.done = loop.create_future()
    phone.ca_certs = args.cafile
    phone.open()
    try:
        status = loop.run_until_complete(asyncio.wait_for(phone.done, 40))
    except asyncio.TimeoutError:
        emit("timeout")
        status = 3
    emit("exit", status=status)
    sys.exit(status)


if __name__ == "__main__":
    main()
