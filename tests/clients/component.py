#!/usr/bin/python3
"""An external component (XEP-0114) built on slixmpp's own ComponentXMPP, for tests.

It connects to the component port with its domain and secret, prints {"event": "ready"}
once the server accepted its handshake, and then answers every chat message with
"echo: BODY" from the address the message was sent to. Every line on stdout is one JSON
object with an "event" key; slixmpp's log goes to stderr.

Exit status: 0 it ran until --seconds passed or it was disconnected after being
accepted, 1 the handshake was refused or the connection failed.
"""

import argparse
import asyncio
import json
import logging
import sys

import slixmpp
from slixmpp.componentxmpp import ComponentXMPP


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Echo(ComponentXMPP):
    def __init__(self, jid, secret, host, port):
        super().__init__(jid, secret, host, port)
        self.accepted = False
        self.add_event_handler("session_start", self.started)
        self.add_event_handler("message", self.message)
        self.add_event_handler("disconnected", self.gone)
        self.add_event_handler("stream_error", self.stream_error)

    def started(self, _event):
        self.accepted = True
        emit("ready", jid=str(self.boundjid))

    def message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            emit("message", frm=str(msg["from"]), to=str(msg["to"]), body=msg["body"])
            reply = msg.reply("echo: " + msg["body"])
            reply.send()

    def stream_error(self, err):
        emit("stream_error", condition=err["condition"])

    def gone(self, _event):
        emit("disconnected")
        asyncio.get_event_loop().stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--jid", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--seconds", type=float, default=20)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    xmpp = Echo(args.jid, args.secret, args.host, args.port)
    xmpp.connect()
    loop = asyncio.get_event_loop()
    loop.call_later(args.seconds, loop.stop)
    loop.run_forever()
    sys.exit(0 if xmpp.accepted else 1)


if __name__ == "__main__":
    main()
