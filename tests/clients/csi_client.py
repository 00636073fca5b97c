#!/usr/bin/python3
"""XEP-0352 Client State Indication with slixmpp's own xep_0352 plugin, for tests/csi.rs.

A "phone" that logs in, sends presence, waits for the presence of each --contact (bare
JIDs), then goes inactive and reports what it receives, step by step. The test drives
the contacts and tells this script when to go on by creating files in --control-dir
(a file channel, because any stanza sent to the phone could itself make the server
flush what it holds):

  ready              contacts seen; then <inactive/> is sent ("inactive")
  file step1      -> "report1": every stanza received since <inactive/>
  (a chat message with a body arrives) -> "body": the stanzas received since report1,
                     the body message last
  file step2      -> "report2": the stanzas received since the body
                     then <active/> and a ping to the server: "active": the stanzas
                     received between <active/> and the pong (XEP-0352 §5.1: what was
                     held is written before the pong)

Each stanza is reported as {"kind", "from", "type", "show", "status", "body", "payload"}.
Lines on stdout are JSON objects with an "event" key; exit 0 on success, 1 on failure,
3 on timeout.
"""

import argparse
import asyncio
import json
import logging
import os
import sys

try:
    import slixmpp
    from slixmpp.xmlstream.handler import Callback
    from slixmpp.xmlstream.matcher import MatchXPath
except ImportError:  # pragma: no cover
    print(json.dumps({"event": "error", "reason": "slixmpp is not installed for " + sys.executable}),
          flush=True)
    sys.exit(1)

EXIT_OK, EXIT_FAIL, EXIT_TIMEOUT = 0, 1, 3


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def describe(stanza):
    """What a test needs to know of a stanza."""
    xml = stanza.xml
    payload = [child.tag for child in xml]
    d = {
        "kind": xml.tag.split('}')[-1],
        "from": str(stanza['from']),
        "type": xml.get('type'),
        "payload": payload,
    }
    if d["kind"] == "presence":
        d["show"] = stanza['show'] or None
        d["status"] = stanza['status'] or None
    if d["kind"] == "message":
        d["body"] = stanza['body'] or None
    return d


class Phone(slixmpp.ClientXMPP):
    def __init__(self, args):
        # SCRAM-*-PLUS needs tls-exporter, which CPython lacks on TLS 1.3.
        super().__init__(args.jid, args.password, sasl_mech='SCRAM-SHA-256')
        self.args = args
        self.contacts = set(args.contact)
        self.seen_contacts = set()
        self.contacts_seen = asyncio.Event()
        self.log = []
        self.body_seen = asyncio.Event()
        self.csi_enabled = False
        self.failed = None
        self.register_plugin('xep_0352')
        self.add_event_handler('csi_enabled', self.on_csi)
        self.add_event_handler('session_start', self.start)
        self.add_event_handler('failed_auth', self.on_failed_auth)
        # Synchronous handlers: run in arrival order, before a later iq's answer.
        self.add_event_handler('presence', self.on_presence)
        # slixmpp's 'message' event needs a body; chat states and receipts count here.
        self.register_handler(Callback('csi: every message',
                                       MatchXPath('{jabber:client}message'),
                                       self.on_message))

    def on_failed_auth(self, *_):
        self.failed = "authentication failed"
        self.disconnect()

    def on_csi(self, _features):
        self.csi_enabled = True

    def on_presence(self, p):
        self.log.append(describe(p))
        if p['type'] in ('available', None, '') and p['from'].bare in self.contacts:
            self.seen_contacts.add(p['from'].bare)
            if self.seen_contacts == self.contacts:
                self.contacts_seen.set()

    def on_message(self, m):
        self.log.append(describe(m))
        if m['body']:
            self.body_seen.set()

    async def wait_file(self, name):
        path = os.path.join(self.args.control_dir, name)
        while not os.path.exists(path):
            await asyncio.sleep(0.05)

    def take_log(self):
        log, self.log = self.log, []
        return log

    async def start(self, _event):
        try:
            await asyncio.wait_for(self.run(), self.args.timeout)
        except asyncio.TimeoutError:
            emit("timeout", log=self.log)
            self.failed = "timeout"
        except Exception as e:  # reported, never a traceback only
            emit("error", reason=repr(e))
            self.failed = repr(e)
        self.disconnect()

    async def run(self):
        if not self.csi_enabled:
            emit("error", reason="the server did not announce <csi xmlns='urn:xmpp:csi:0'/>")
            self.failed = "no csi feature"
            return
        self.send_presence()
        await self.contacts_seen.wait()
        emit("ready", log=self.take_log())
        self.plugin['xep_0352'].send_inactive()
        emit("inactive")
        await self.wait_file("step1")
        emit("report1", log=self.take_log())
        await self.body_seen.wait()
        emit("body", log=self.take_log())
        await self.wait_file("step2")
        emit("report2", log=self.take_log())
        self.plugin['xep_0352'].send_active()
        iq = self.Iq(stype='get', sto=self.boundjid.domain)
        iq.enable('ping')
        await iq.send(timeout=self.args.timeout)
        emit("active", log=self.take_log())


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--jid', required=True)
    ap.add_argument('--password', required=True)
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--cafile', required=True)
    ap.add_argument('--contact', action='append', default=[])
    ap.add_argument('--control-dir', required=True)
    ap.add_argument('--timeout', type=float, default=20)
    ap.add_argument('--debug', action='store_true')
    args = ap.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr, format='%(levelname)s %(name)s %(message)s')

    if not args.debug:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    xmpp = Phone(args)
    xmpp.ca_certs = args.cafile
    xmpp.register_plugin('xep_0199')
    done = loop.create_future()
    xmpp.add_event_handler('disconnected',
                           lambda *_: done.done() or done.set_result(None))
    if hasattr(xmpp, "enable_direct_tls"):
        # slixmpp >= 1.9
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = True
        xmpp.enable_plaintext = False
        xmpp.connect(args.host, args.port)
    else:
        # slixmpp 1.8 (Debian 12)
        xmpp.connect((args.host, args.port), use_ssl=False, force_starttls=True)
    try:
        loop.run_until_complete(asyncio.wait_for(done, args.timeout + 10))
    except asyncio.TimeoutError:
        emit("timeout")
        sys.exit(EXIT_TIMEOUT)
    if xmpp.failed == "timeout":
        sys.exit(EXIT_TIMEOUT)
    emit("exit", failed=xmpp.failed)
    sys.exit(EXIT_FAIL if xmpp.failed else EXIT_OK)


if __name__ == '__main__':
    main()
