#!/usr/bin/env python3
"""Private XML storage (XEP-0049) and vcard-temp (XEP-0054) with aioxmpp 0.13's own
services, PrivateXMLService and VCardService, for tests/store.rs.

--role owner: store an element with PrivateXMLService and read it back, set a vCard with
  a photo (VCard.set_photo_data) with VCardService and read it back  -> "owner"
--role reader: read --other's vCard with VCardService (its photo), and try to read
  --other's private XML (aioxmpp sends it to --other's bare JID: an error) -> "reader"

Every stdout line is one JSON object with an "event" key; exit 0 on success, 1 on a
failed step, 2 no session. The certificate is not verified (a test server on loopback).
"""

import argparse
import asyncio
import base64
import json
import sys

try:
    import aioxmpp
    import aioxmpp.private_xml
    import aioxmpp.vcard
    import aioxmpp.xso as xso
except ImportError as e:
    print(json.dumps({"event": "error", "reason": f"aioxmpp is not importable: {e}"}), flush=True)
    sys.exit(2)

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


@aioxmpp.private_xml.Query.as_payload_class
class Settings(xso.XSO):
    TAG = ("urn:hearth:test:aioxmpp", "settings")
    theme = xso.Attr("theme", default=None)
    motto = xso.Text(default=None)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


async def owner(client, args):
    private = client.summon(aioxmpp.private_xml.PrivateXMLService)
    s = Settings()
    s.theme = "dark"
    s.motto = "home & hearth <3"
    await private.set_private_xml(s)
    got = await private.get_private_xml(Settings())
    vcards = client.summon(aioxmpp.vcard.VCardService)
    v = await vcards.get_vcard()
    empty_before = v.get_photo_data() is None
    v.set_photo_data("image/png", PNG)
    await vcards.set_vcard(v)
    again = await vcards.get_vcard()
    emit("owner", theme=got.registered_payload.theme, motto=got.registered_payload.motto,
         empty_before=empty_before, photo=again.get_photo_data() == PNG,
         mime=again.get_photo_mime_type())


async def reader(client, args):
    other = aioxmpp.JID.fromstr(args.other)
    vcards = client.summon(aioxmpp.vcard.VCardService)
    v = await vcards.get_vcard(other)
    condition = None
    try:
        await client.send(aioxmpp.IQ(type_=aioxmpp.IQType.GET, to=other,
                                     payload=aioxmpp.private_xml.Query(Settings())))
    except aioxmpp.errors.XMPPError as e:
        condition = e.condition.value[1] if hasattr(e.condition, "value") else str(e.condition)
    emit("reader", photo=v.get_photo_data() == PNG, private_error=condition)


async def run(args):
    jid = aioxmpp.JID.fromstr(args.jid)
    client = aioxmpp.Client(
        jid,
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    try:
        ctx = client.connected()
        await asyncio.wait_for(ctx.__aenter__(), args.timeout)
    except Exception as e:  # noqa: BLE001
        emit("error", reason=f"no session: {type(e).__name__}: {e}")
        return 2
    try:
        step = owner if args.role == "owner" else reader
        await asyncio.wait_for(step(client, args), args.timeout)
    except Exception as e:  # noqa: BLE001 - any failure is the test's answer
        emit("error", reason=f"{type(e).__name__}: {e}")
        return 1
    finally:
        try:
            await asyncio.wait_for(ctx.__aexit__(None, None, None), 5)
        except Exception:  # noqa: BLE001
            pass
    emit("done")
    return 0


def main(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--role", choices=["owner", "reader"], required=True)
    p.add_argument("--other", default=None)
    p.add_argument("--timeout", type=float, default=20)
    args = p.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
