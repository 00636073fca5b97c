#!/usr/bin/env python3
"""A XEP-0357 app server on aioxmpp 0.13 (PyPI), for tests/push.rs: a client logged in as
an account of the server (the app server's JID is its full JID) whose iq handler takes
pubsub publishes, read with aioxmpp's own XSOs: aioxmpp.pubsub.xso (Request, Publish,
Item, PublishOptions) and aioxmpp.forms.Data for both forms; the <notification/> is
declared here as a pubsub item payload class, as aioxmpp's PEP services declare theirs.

Prints {"event": "ready"} once logged in, then {"event": "push", "frm", "node",
"summary": {var: [values]}, "options": {var: [values]}} for each publish, answered with
a result; exits after --seconds.

The certificate is not verified (`no_verify`): the test talks to its own server on
loopback.
"""

import argparse
import asyncio
import json
import logging
import sys

import aioxmpp
import aioxmpp.forms
import aioxmpp.pubsub.xso as pubsub_xso
import aioxmpp.xso

NS_PUSH = "urn:xmpp:push:0"


@pubsub_xso.as_payload_class
class Notification(aioxmpp.xso.XSO):
    """XEP-0357 §7's <notification/>: a summary form."""

    TAG = (NS_PUSH, "notification")
    data = aioxmpp.xso.Child([aioxmpp.forms.Data])


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def fields(data):
    if data is None:
        return None
    return {f.var: list(f.values) for f in data.fields if f.var}


async def run(args):
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(args.jid),
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )

    async def on_publish(iq):
        request = iq.payload
        publish = request.payload
        if not isinstance(publish, pubsub_xso.Publish) or publish.item is None:
            raise aioxmpp.errors.XMPPCancelError(aioxmpp.errors.ErrorCondition.BAD_REQUEST)
        payload = publish.item.registered_payload
        summary = fields(payload.data) if isinstance(payload, Notification) else None
        options = None
        if request.publish_options is not None:
            options = fields(request.publish_options.data)
        emit("push", frm=str(iq.from_), node=publish.node, summary=summary, options=options)
        return None

    async with client.connected() as stream:
        stream.register_iq_request_handler(aioxmpp.IQType.SET, pubsub_xso.Request, on_publish)
        emit("ready", jid=str(client.local_jid))
        await asyncio.sleep(args.seconds)
    emit("done")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--seconds", type=float, default=15)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
