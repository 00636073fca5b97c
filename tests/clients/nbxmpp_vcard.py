#!/usr/bin/python3
"""XEP-0054 vcard-temp with python-nbxmpp (Gajim's XMPP library, Debian's
python3-nbxmpp), for tests/store.rs: log in over STARTTLS; without --other, set a vCard
with FN and an avatar (nbxmpp's VCard.set_avatar) through the VCardTemp module and read
it back from the account's bare JID; with --other, read that account's vCard. Prints
{"event": "vcard", "fn": ..., "avatar_sha1": ...} (the SHA-1 nbxmpp computes of the
photo, what Gajim puts in XEP-0153 presence) and exits 0; on any error prints
{"event": "error", ...} and exits 1 (3 on timeout).

Usage: nbxmpp_vcard.py --port P --jid user@domain --password PW [--other JID]
The server's certificate is not checked (tests use self-signed ones).
"""

import argparse
import base64
import json
import sys

from gi.repository import GLib

from nbxmpp.client import Client
from nbxmpp.const import ConnectionProtocol, ConnectionType
from nbxmpp.modules.vcard_temp import VCard
from nbxmpp.protocol import JID

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class Run:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.status = 1
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
        emit("error", reason="timeout")
        self.done(3)
        return False

    def on_failed(self, _client, _signal_name):
        emit("error", reason="connection failed", detail=str(self.client.get_error()))
        self.status = 1
        self.loop.quit()

    def on_disconnected(self, _client, _signal_name):
        if self.status != 0:
            self.loop.quit()

    def vcards(self):
        return self.client.get_module("VCardTemp")

    def on_connected(self, _client, _signal_name):
        emit("session_start", jid=str(self.client.get_bound_jid()))
        if self.args.other:
            self.vcards().request_vcard(jid=JID.from_string(self.args.other),
                                        callback=self.on_vcard)
            return
        vcard = VCard()
        vcard.data["FN"] = "Bob Builder"
        vcard.set_avatar(PNG, "image/png")
        self.vcards().set_vcard(vcard, callback=self.on_set)

    def on_set(self, task):
        try:
            task.finish()
        except Exception as e:  # noqa: BLE001 - any failure is the test's answer
            emit("error", reason="set failed", detail=repr(e))
            self.done(1)
            return
        own = self.client.get_bound_jid().new_as_bare()
        self.vcards().request_vcard(jid=own, callback=self.on_vcard)

    def on_vcard(self, task):
        try:
            vcard = task.finish()
        except Exception as e:  # noqa: BLE001
            emit("error", reason="request failed", detail=repr(e))
            self.done(1)
            return
        _avatar, sha = vcard.get_avatar()
        emit("vcard", fn=vcard.data.get("FN"), avatar_sha1=sha)
        self.done(0)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--other", default=None)
    p.add_argument("--timeout", type=int, default=30)
    args = p.parse_args(argv)
    sys.exit(Run(args).run())


if __name__ == "__main__":
    main(sys.argv[1:])
