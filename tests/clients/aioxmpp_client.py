#!/usr/bin/env python3
"""A strict third-party client (aioxmpp 0.13, from PyPI) for integration tests.

aioxmpp matches an iq reply to its request by (`from`, `id`): a reply whose `from` is not
the request's `to` (with no `to` standing for the account itself, so no `from` or the
account's bare JID) is dropped as unexpected and the request waits forever. RFC 6120
§8.1.2.1 and §10.3.3 are the rule it enforces. This script logs in and runs a fixed list
of checks, each with its own deadline so a reply the library ignores fails the check
instead of hanging the run:

  disco-account-no-to    disco#info with no `to` (the account, RFC 6120 §10.3.3)
  disco-account-bare     disco#info to the account's bare JID
  disco-server           disco#info to the server's domain
  ping-no-to             XEP-0199 ping with no `to`
  ping-server            XEP-0199 ping to the domain
  unknown-no-to          an iq get for a namespace nobody handles, no `to`: an error
  unknown-bare           the same to the account's bare JID: an error
  unknown-server         the same to the domain: an error
  vcard-no-to            vcard-temp get with no `to` (the account's own vCard: a result)

With --carbons it runs XEP-0280 instead, with aioxmpp's own services: CarbonsClient
enables carbons (it first checks the server's disco#info for the feature), presence is
sent with --priority, "ready" printed, each --send JID=BODY sent as a chat message; the
IM dispatcher (aioxmpp.im.dispatcher.IMDispatcher) unwraps what arrives, accepting copies
only from the account's bare JID, and each message is printed ("message" with "source":
"carbons" or "stream", "sent" true for a sent copy); once --expect copies came, the run
stays --linger seconds and exits 0.

With --upload FILE it runs XEP-0363 with aioxmpp's own httpupload module: the upload
service is found by disco (the server's items, the one whose info has
`urn:xmpp:http:upload:0`), `aioxmpp.httpupload.request_slot` asks the slot, and the file
is PUT with Python's http.client (streamed, `Content-Type` and `Content-Length` as §5
says) to --host; "uploaded" carries the GET URL and the PUT's status, an iq error
"error" with its condition.

Every stdout line is one JSON object with an "event" key: "check" lines carry "name",
"ok" and "detail"; "disco" lines the features of each disco#info answer; "done" closes
the run. Exit status: 0 every check passed, 1 one failed, 2 no session.

The certificate is not verified (`no_verify`): the test talks to its own server on
loopback, and what is tested here is iq addressing, not TLS.
"""

import argparse
import asyncio
import json
import logging
import sys

try:
    import aioxmpp
    import aioxmpp.disco
    import aioxmpp.ping
    import aioxmpp.vcard
    import aioxmpp.xso
except ImportError as e:  # reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": f"aioxmpp is not importable for {sys.executable}: {e}"}),
          flush=True)
    sys.exit(2)

EXIT_OK, EXIT_FAIL, EXIT_NO_SESSION = 0, 1, 2

NS_NOTHING = "urn:example:hearth:nobody-handles-this"


class Nothing(aioxmpp.xso.XSO):
    """A payload in a namespace no server implements."""

    TAG = (NS_NOTHING, "query")


aioxmpp.IQ.as_payload_class(Nothing)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


async def expect_result(coro, deadline):
    """The check passes when the library hands back a result in time."""
    try:
        value = await asyncio.wait_for(coro, deadline)
    except asyncio.TimeoutError:
        return False, "no reply the library accepted (timed out)", None
    except aioxmpp.errors.XMPPError as e:
        return False, f"error reply: {e.condition}", None
    return True, "result", value


async def expect_error(coro, deadline):
    """The check passes when the library raises the server's stanza error in time."""
    try:
        await asyncio.wait_for(coro, deadline)
    except asyncio.TimeoutError:
        return False, "no reply the library accepted (timed out)"
    except aioxmpp.errors.XMPPError as e:
        return True, f"error reply: {e.condition}"
    return False, "a result where an error was expected"


def iq_get(to, payload):
    return aioxmpp.IQ(to=to, type_=aioxmpp.IQType.GET, payload=payload)


async def run(args):
    jid = aioxmpp.JID.fromstr(args.jid)
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    try:
        stream_ctx = client.connected()
        await asyncio.wait_for(stream_ctx.__aenter__(), args.timeout)
    except Exception as e:  # noqa: BLE001 - any failure to log in ends the run
        emit("error", reason=f"no session: {type(e).__name__}: {e}")
        return EXIT_NO_SESSION
    emit("session", jid=str(client.local_jid))
    bare = client.local_jid.bare()
    domain = aioxmpp.JID(None, client.local_jid.domain, None)
    disco = client.summon(aioxmpp.DiscoClient)
    d = args.check_timeout
    failed = 0

    def report(name, ok, detail):
        nonlocal failed
        failed += 0 if ok else 1
        emit("check", name=name, ok=ok, detail=detail)

    for name, target in [("disco-account-no-to", None),
                         ("disco-account-bare", bare),
                         ("disco-server", domain)]:
        ok, detail, info = await expect_result(
            disco.query_info(target, require_fresh=True, no_cache=True), d)
        report(name, ok, detail)
        if info is not None:
            emit("disco", name=name,
                 features=sorted(info.features),
                 identities=[[i.category, i.type_] for i in info.identities])

    for name, target in [("ping-no-to", None), ("ping-server", domain)]:
        ok, detail, _ = await expect_result(aioxmpp.ping.ping(client, target), d)
        report(name, ok, detail)

    for name, target in [("unknown-no-to", None),
                         ("unknown-bare", bare),
                         ("unknown-server", domain)]:
        ok, detail = await expect_error(client.send(iq_get(target, Nothing())), d)
        report(name, ok, detail)

    ok, detail, _ = await expect_result(client.send(iq_get(None, aioxmpp.vcard.xso.VCard())), d)
    report("vcard-no-to", ok, detail)

    try:
        await asyncio.wait_for(stream_ctx.__aexit__(None, None, None), 5)
    except Exception:  # noqa: BLE001 - closing is not what is tested
        pass
    emit("done", failed=failed)
    return EXIT_FAIL if failed else EXIT_OK


async def run_upload(args):
    import http.client
    import os
    import ssl
    import urllib.parse
    import aioxmpp.httpupload

    jid = aioxmpp.JID.fromstr(args.jid)
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    async with client.connected():
        disco = client.summon(aioxmpp.DiscoClient)
        domain = aioxmpp.JID(None, client.local_jid.domain, None)
        items = await disco.query_items(domain, require_fresh=True)
        service = None
        for item in items.items:
            info = await disco.query_info(item.jid, require_fresh=True)
            if "urn:xmpp:http:upload:0" in info.features:
                service = item.jid
                break
        if service is None:
            emit("error", reason="no upload service in disco")
            return EXIT_FAIL
        size = os.path.getsize(args.upload)
        try:
            slot = await aioxmpp.httpupload.request_slot(
                client, service, os.path.basename(args.upload), size, args.content_type)
        except aioxmpp.errors.XMPPError as e:
            emit("error", reason="iq error", condition=e.condition.value[1])
            return EXIT_FAIL
        url = urllib.parse.urlsplit(slot.put.url)

        def put():
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(args.host, url.port or 443, context=ctx, timeout=30)
            headers = {"Host": url.netloc, "Content-Type": args.content_type,
                       "Content-Length": str(size)}
            headers.update(dict(slot.put.headers.items()))
            with open(args.upload, "rb") as f:
                conn.request("PUT", url.path, body=f, headers=headers)
                return conn.getresponse().status

        status = await asyncio.get_running_loop().run_in_executor(None, put)
        emit("uploaded", url=slot.get.url, put=slot.put.url, status=status,
             service=str(service))
    return EXIT_OK if status in (200, 201) else EXIT_FAIL


async def run_carbons(args):
    import aioxmpp.carbons
    import aioxmpp.im.dispatcher

    jid = aioxmpp.JID.fromstr(args.jid)
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    dispatcher = client.summon(aioxmpp.im.dispatcher.IMDispatcher)
    carbons = client.summon(aioxmpp.carbons.CarbonsClient)
    copies = 0
    enough = asyncio.Event()

    def on_message(message, peer, sent, source):
        nonlocal copies
        is_copy = source == aioxmpp.im.dispatcher.MessageSource.CARBONS
        body = message.body.any() if message.body else None
        emit("message", source="carbons" if is_copy else "stream", sent=sent,
             sender=str(message.from_), to=str(message.to), body=body)
        if is_copy:
            copies += 1
            if copies >= args.expect:
                enough.set()
        return None

    dispatcher.message_filter.register(on_message, 0)
    try:
        stream_ctx = client.connected()
        await asyncio.wait_for(stream_ctx.__aenter__(), args.timeout)
    except Exception as e:  # noqa: BLE001 - any failure to log in ends the run
        emit("error", reason=f"no session: {type(e).__name__}: {e}")
        return EXIT_NO_SESSION
    try:
        await asyncio.wait_for(carbons.enable(), args.check_timeout)
    except Exception as e:  # noqa: BLE001 - reported, the run fails
        emit("error", reason=f"enabling carbons: {type(e).__name__}: {e}")
        return EXIT_FAIL
    emit("carbons_enabled")
    await client.send(aioxmpp.Presence(type_=aioxmpp.PresenceType.AVAILABLE))
    emit("ready", jid=str(client.local_jid))
    for spec in args.send or []:
        to, _, body = spec.partition("=")
        msg = aioxmpp.Message(to=aioxmpp.JID.fromstr(to), type_=aioxmpp.MessageType.CHAT)
        msg.body[None] = body
        await client.send(msg)
        emit("sent", to=to, body=body)
    if copies < args.expect:
        try:
            await asyncio.wait_for(enough.wait(), args.timeout)
        except asyncio.TimeoutError:
            emit("error", reason=f"{copies} carbon copies, {args.expect} expected")
            return EXIT_FAIL
    await asyncio.sleep(args.linger)
    try:
        await asyncio.wait_for(stream_ctx.__aexit__(None, None, None), 5)
    except Exception:  # noqa: BLE001 - closing is not what is tested
        pass
    emit("done", copies=copies)
    return EXIT_OK


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--timeout", type=float, default=20, help="seconds to log in")
    p.add_argument("--check-timeout", type=float, default=3,
                   help="seconds each check waits for a reply the library accepts")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--carbons", action="store_true", help="run the XEP-0280 scenario")
    p.add_argument("--send", action="append", metavar="JID=BODY")
    p.add_argument("--expect", type=int, default=0, help="carbon copies to wait for")
    p.add_argument("--linger", type=float, default=1.0)
    p.add_argument("--upload", metavar="FILE", help="run the XEP-0363 scenario")
    p.add_argument("--content-type", default="application/octet-stream")
    args = p.parse_args()
    if args.upload:
        sys.exit(asyncio.run(run_upload(args)))
    if args.carbons:
        sys.exit(asyncio.run(run_carbons(args)))
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
