#!/usr/bin/python3
"""Stream management (XEP-0198) with slixmpp's own xep_0198 plugin, for integration tests.

Logs in (STARTTLS, trusting --cafile), lets the plugin enable stream management with
resumption, sends available presence, prints {"event": "ready", "sm_id": ...}, then
collects chat messages until --count distinct bodies arrived. When the connection drops,
it connects again to the same address and lets the plugin resume the session
(`session_resumed`), or reports that resumption failed (`resume_failed`). On the way it
prints every body received ("message", with a running count), and at the end "done"
with every body in the order received, so the test can check that nothing was lost and
nothing came twice.

Exit status: 0 all messages arrived, 1 failure, 3 timed out.
"""

import argparse
import asyncio
import json
import logging
import sys

try:
    import slixmpp
except ImportError:  # reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": "slixmpp is not installed for " + sys.executable}),
          flush=True)
    sys.exit(1)

EXIT_OK, EXIT_FAIL, EXIT_TIMEOUT = 0, 1, 3


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        self.args = args
        self.result = None
        self.bodies = []
        self.connections = 0
        self.register_plugin("xep_0198", {"allow_resume": True})
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("sm_enabled", self.on_sm_enabled)
        self.add_event_handler("session_resumed", self.on_resumed)
        self.add_event_handler("sm_failed", self.on_sm_failed)
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("connection_failed", self.on_connection_failed)
        self.add_event_handler("message", self.on_message)

    def finish(self, status):
        if self.result is not None and not self.result.done():
            self.result.set_result(status)

    def open(self):
        self.connections += 1
        if hasattr(self, "enable_direct_tls"):
            self.enable_direct_tls = False
            self.enable_starttls = True
            self.enable_plaintext = False
            self.connect(self.args.host, self.args.port)
        else:
            self.connect((self.args.host, self.args.port), use_ssl=False, force_starttls=True)

    def on_session_start(self, _event):
        self.send_presence()
        emit("ready", sm_id=self["xep_0198"].sm_id, connection=self.connections)

    def on_sm_enabled(self, stanza):
        emit("sm_enabled", id=stanza["id"], resume=stanza["resume"])

    def on_resumed(self, _stanza):
        emit("resumed", connection=self.connections, handled=self["xep_0198"].handled)

    def on_sm_failed(self, stanza):
        emit("resume_failed", stanza=str(stanza))

    def on_connection_failed(self, error):
        emit("connection_failed", detail=str(error))

    def on_disconnected(self, reason=None):
        if self.result is None or self.result.done():
            return
        emit("disconnected", detail=str(reason), connection=self.connections)
        if self.connections >= self.args.max_connections:
            emit("error", reason="too many reconnections")
            self.finish(EXIT_FAIL)
            return
        asyncio.get_event_loop().call_later(self.args.reconnect_after, self.open)

    def on_message(self, msg):
        body = msg["body"]
        if msg["type"] not in ("chat", "normal") or not body:
            return
        self.bodies.append(body)
        emit("message", body=body, n=len(self.bodies))
        if len(set(self.bodies)) >= self.args.count:
            emit("done", bodies=self.bodies)
            self.finish(EXIT_OK)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--reconnect-after", type=float, default=0.5)
    p.add_argument("--max-connections", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)-8s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = Client(args)
    client.result = loop.create_future()
    client.ca_certs = args.cafile
    client.open()
    try:
        status = loop.run_until_complete(asyncio.wait_for(client.result, args.timeout))
    except asyncio.TimeoutError:
        emit("timeout", bodies=client.bodies)
        status = EXIT_TIMEOUT
    try:
        loop.run_until_complete(asyncio.wait_for(client.disconnect(wait=1.0), 3.0))
    except Exception:  # noqa: BLE001 - the outcome is already known
        pass
    emit("exit", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
