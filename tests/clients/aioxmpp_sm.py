#!/usr/bin/env python3
"""Stream management (XEP-0198) with aioxmpp 0.13's own implementation (PyPI).

aioxmpp enables stream management with resumption by itself when the server offers it,
and when the connection fails it reconnects and resumes (`on_stream_suspended`, then
`on_stream_resumed`, or `on_stream_destroyed` when the session was lost). This script
logs in through --host/--port (STARTTLS, certificate not verified: the test talks to its
own server on loopback), sends available presence, prints {"event": "ready"}, and
collects chat messages until --count distinct bodies arrived, printing every signal and
body; "done" lists the bodies in the order received.

Exit status: 0 all arrived, 1 failure, 3 timed out.
"""

import argparse
import asyncio
import json
import logging
import sys

try:
    import aioxmpp
except ImportError as e:  # reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": f"aioxmpp is not importable for {sys.executable}: {e}"}),
          flush=True)
    sys.exit(1)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


async def run(args):
    jid = aioxmpp.JID.fromstr(args.jid)
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    client.backoff_start = __import__("datetime").timedelta(seconds=0.5)
    bodies = []
    done = asyncio.get_running_loop().create_future()

    def on_message(msg):
        body = msg.body.any() if msg.body else None
        if not body:
            return
        bodies.append(body)
        emit("message", body=body, n=len(bodies))
        if len(set(bodies)) >= args.count and not done.done():
            done.set_result(True)

    client.on_stream_suspended.connect(lambda reason=None: emit("suspended", reason=str(reason)))
    client.on_stream_resumed.connect(lambda: emit("resumed", sm_id=client.stream.sm_id))
    client.on_stream_destroyed.connect(lambda reason=None: emit("destroyed", reason=str(reason)))
    try:
        stream_ctx = client.connected()
        await asyncio.wait_for(stream_ctx.__aenter__(), args.timeout)
    except Exception as e:  # noqa: BLE001 - any failure to log in ends the run
        emit("error", reason=f"no session: {type(e).__name__}: {e}")
        return 1
    client.stream.register_message_callback(aioxmpp.MessageType.CHAT, None, on_message)
    await client.send(aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE))
    emit("ready", sm_enabled=client.stream.sm_enabled, sm_resumable=client.stream.sm_resumable)
    status = 0
    try:
        await asyncio.wait_for(done, args.timeout)
        emit("done", bodies=bodies)
    except asyncio.TimeoutError:
        emit("timeout", bodies=bodies)
        status = 3
    try:
        await asyncio.wait_for(stream_ctx.__aexit__(None, None, None), 5)
    except Exception:  # noqa: BLE001 - closing is not what is tested
        pass
    return status


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
