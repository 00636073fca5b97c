#!/usr/bin/python3
"""XEP-0313 with python-nbxmpp (Gajim's XMPP library, Debian's python3-nbxmpp), for
integration tests: log in over STARTTLS, page through the account's whole archive with
nbxmpp's MAM module (XEP-0059 <after/> from each page's last id, until <fin
complete='true'/>), print one JSON line {"event": "mam", "bodies": [...], "ids": [...],
"pages": N} and exit 0; on any error print {"event": "error", ...} and exit 1.

Usage: nbxmpp_mam.py --port P --jid user@domain --password PW [--max N] [--timeout S]
The server's certificate is not checked (tests use self-signed ones).
"""

import argparse
import json
import sys

from gi.repository import GLib

import nbxmpp
from nbxmpp.client import Client
from nbxmpp.const import ConnectionProtocol, ConnectionType
from nbxmpp.protocol import JID
from nbxmpp.structs import StanzaHandler


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class Mam:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.status = 1
        self.bodies, self.ids = [], []
        self.pages = 0
        self.queryid = None
        jid = JID.from_string(args.jid)
        c = Client()
        c.set_domain(jid.domain)
        c.set_username(jid.localpart)
        c.set_resource("nbxmpp")
        c.set_password(args.password)
        c.set_custom_host(f"127.0.0.1:{args.port}", ConnectionProtocol.TCP,
                          ConnectionType.START_TLS)
        c.set_ignore_tls_errors(True)
        c.subscribe("connected", self.on_connected)
        c.subscribe("connection-failed", self.on_failed)
        c.subscribe("disconnected", self.on_disconnected)
        # After nbxmpp's own message handlers (priority 5 and 10) have parsed the body.
        c.register_handler(StanzaHandler(name="message", callback=self.on_message,
                                         priority=50))
        self.client = c

    def run(self):
        GLib.timeout_add_seconds(self.args.timeout, self.on_timeout)
        self.client.connect()
        self.loop.run()
        return self.status

    def done(self, status):
        self.status = status
        self.client.disconnect()
        GLib.timeout_add(200, self.loop.quit)

    def on_timeout(self):
        emit("error", reason="timeout", pages=self.pages, got=len(self.bodies))
        self.done(3)
        return False

    def on_failed(self, _client, _signal_name):
        emit("error", reason="connection failed", detail=str(self.client.get_error()))
        self.status = 1
        self.loop.quit()

    def on_disconnected(self, _client, _signal_name):
        if self.status != 0:
            self.loop.quit()

    def on_connected(self, _client, _signal_name):
        emit("session_start", jid=str(self.client.get_bound_jid()))
        self.query(None)

    def on_message(self, _client, _stanza, properties):
        if properties.is_mam_message and properties.mam.query_id == self.queryid:
            self.bodies.append(properties.body)
            self.ids.append(properties.mam.id)

    def query(self, after):
        self.queryid = nbxmpp.util.generate_id()
        own = self.client.get_bound_jid().new_as_bare()
        self.client.get_module("MAM").make_query(own, queryid=self.queryid, after=after,
                                                 max_=self.args.max, callback=self.on_fin)

    def on_fin(self, task):
        try:
            result = task.finish()
        except Exception as e:  # noqa: BLE001 - any failure is the test's answer
            emit("error", reason="query failed", detail=repr(e))
            self.done(1)
            return
        self.pages += 1
        if result.complete or result.rsm.last is None:
            emit("mam", bodies=self.bodies, ids=self.ids, pages=self.pages)
            self.done(0)
        else:
            self.query(result.rsm.last)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--max", type=int, default=50)
    p.add_argument("--timeout", type=int, default=60)
    args = p.parse_args(argv)
    sys.exit(Mam(args).run())


if __name__ == "__main__":
    main(sys.argv[1:])
