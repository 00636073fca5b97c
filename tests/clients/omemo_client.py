#!/usr/bin/env python3
"""OMEMO (XEP-0384) end to end through the server's PEP, with real OMEMO libraries.

Two accounts log in at once in this one process, each with its own slixmpp client and
its own slixmpp-omemo plugin (python-omemo with the `oldmemo` backend for the legacy
`eu.siacs.conversations.axolotl` namespace that Conversations, Dino and Gajim use, and
the `twomemo` backend for `urn:xmpp:omemo:2`), each with its own key store. Nothing is
shared between them but the server: every key one learns about the other comes from the
other's PEP nodes.

  1. Both clients start their OMEMO session managers: each generates its identity, signed
     pre-key and 100 pre-keys and publishes, for both namespaces, its bundle and its
     device list to its own PEP service with publish-options `pubsub#access_model=open`
     (and `persist_items`, `max_items`). "published" is printed with the device ids.
  2. Each reads the other's device lists with a plain XEP-0060 items request (open
     access: no presence subscription is needed) and checks its own device id is there
     ("devicelist" events).
  3. --sender encrypts --body for the recipient: the library downloads the recipient's
     device list and bundle from the server (and subscribes to the device list node
     explicitly, since the two have no presence subscription), builds an X3DH session
     and sends a legacy-OMEMO <encrypted/> message. The recipient decrypts it
     ("decrypted" with the namespace and the plaintext).
  4. The recipient answers, encrypted, over the session the first message built; the
     sender decrypts that (the session works both ways).
  5. omemo:2 (with --omemo2): the same with the twomemo backend. slixmpp-omemo has no
     XEP-0420 (SCE) envelope yet, so the script hands python-omemo raw bytes for the
     twomemo backend and serializes/parses the omemo:2 <encrypted/> element with
     twomemo's own functions; the keys still come from the omemo:2 bundles on the server.

With --external-peer JID instead of --peer, only the sender logs in here and the
recipient is another OMEMO implementation already running (tests/clients/omemo_gajim.py,
Gajim's nbxmpp with python-axolotl): steps 1 and 2 for the sender, the message, and the
recipient's encrypted answer "re: BODY" decrypted.

Every stdout line is one JSON object with an "event" key; "done" closes a successful
run. Exit status: 0 all steps passed, 1 one failed (the "fail" event says which), 2 a
client could not log in, 3 timed out.

Needs slixmpp >= 1.8.5 and slixmpp-omemo 2 from PyPI (Debian's slixmpp 1.8.3 is too
old), in the venv `.ci/run` makes: <target dir>/omemo-venv.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

try:
    import oldmemo
    import oldmemo.etree
    import omemo
    import twomemo
    import twomemo.etree
    from omemo.storage import Just, Nothing, Storage
    from slixmpp import JID, ClientXMPP
    from slixmpp.exceptions import IqError, IqTimeout
    from slixmpp.plugins import register_plugin
    from slixmpp.xmlstream.handler import CoroutineCallback
    from slixmpp.xmlstream.matcher import MatchXPath
    from slixmpp_omemo import XEP_0384
except ImportError as e:  # reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": f"not importable for {sys.executable}: {e}"}),
          flush=True)
    sys.exit(2)

EXIT_OK, EXIT_FAIL, EXIT_NO_SESSION, EXIT_TIMEOUT = 0, 1, 2, 3

OLD_NS = oldmemo.oldmemo.NAMESPACE  # eu.siacs.conversations.axolotl
TWO_NS = twomemo.twomemo.NAMESPACE  # urn:xmpp:omemo:2
OLD_DEVICELIST = "eu.siacs.conversations.axolotl.devicelist"
TWO_DEVICELIST = "urn:xmpp:omemo:2:devices"


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Failed(Exception):
    """A step did not do what OMEMO needs; the message says what."""


class MemoryStorage(Storage):
    """python-omemo's key store for one account, kept in a JSON file in a temp dir."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.data = {}

    async def _load(self, key):
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key, value):
        self.data[key] = value
        self.path.write_text(json.dumps(self.data))

    async def _delete(self, key):
        self.data.pop(key, None)
        self.path.write_text(json.dumps(self.data))


class OmemoPlugin(XEP_0384):
    """slixmpp-omemo with blind trust before verification (what Conversations does
    by default): a test has no one to ask."""

    default_config = {"fallback_message": "This message is OMEMO encrypted.", "store_path": None}

    def plugin_init(self):
        self._store = MemoryStorage(Path(self.store_path))
        super().plugin_init()

    @property
    def storage(self):
        return self._store

    @property
    def _btbv_enabled(self):
        return True

    async def _devices_blindly_trusted(self, blindly_trusted, identifier):
        pass

    async def _prompt_manual_trust(self, manually_trusted, identifier):
        raise Failed(f"manual trust asked for {manually_trusted} (BTBV is on)")


register_plugin(OmemoPlugin)


class Account(ClientXMPP):
    def __init__(self, jid, password, store_dir, mech):
        # One forced mechanism: no SCRAM-*-PLUS, which needs tls-exporter on TLS 1.3.
        super().__init__(jid, password, sasl_mech=mech)
        self.name = JID(jid).user
        self.session = asyncio.get_event_loop().create_future()
        self.initialized = asyncio.get_event_loop().create_future()
        self.inbox = asyncio.Queue()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0060")
        self.register_plugin("xep_0163")
        self.register_plugin("xep_0380")
        self.register_plugin("xep_0384", {"store_path": str(Path(store_dir) / f"{self.name}.json")},
                             module=sys.modules[__name__])
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("omemo_initialized", self.on_omemo_initialized)
        self.add_event_handler("oldmemo_device_list_publish", self.on_devicelist_event)
        self.add_event_handler("twomemo_device_list_publish", self.on_devicelist_event)
        self.register_handler(CoroutineCallback(
            "omemo messages", MatchXPath(f"{{{self.default_ns}}}message"), self.on_message))

    async def on_session_start(self, _):
        self.send_presence()
        try:
            await self.get_roster()
        except (IqError, IqTimeout) as e:
            self.fail_session(f"roster: {e}")
            return
        if not self.session.done():
            self.session.set_result(True)

    def on_failed_auth(self, _):
        self.fail_session("authentication failed")

    def fail_session(self, reason):
        if not self.session.done():
            self.session.set_exception(Failed(f"{self.name}: {reason}"))

    def on_omemo_initialized(self, _):
        if not self.initialized.done():
            self.initialized.set_result(True)

    def on_devicelist_event(self, msg):
        emit("devicelist_notification", account=self.name, publisher=msg["from"].bare,
             node=msg["pubsub_event"]["items"]["node"])

    async def on_message(self, stanza):
        if stanza["type"] not in ("chat", "normal"):
            return
        if stanza.xml.find(f"{{{OLD_NS}}}encrypted") is None and \
                stanza.xml.find(f"{{{TWO_NS}}}encrypted") is None:
            return
        await self.inbox.put(stanza)


async def read_devicelist(reader, owner, node):
    """The device ids in `owner`'s device list `node`, read with a plain items request."""
    iq = await reader.plugin["xep_0060"].get_items(JID(owner.boundjid.bare), node, max_items=1)
    items = list(iq["pubsub"]["items"])
    if len(items) != 1:
        raise Failed(f"{node} of {owner.boundjid.bare}: {len(items)} items, expected 1")
    payload = items[0].xml
    ids = set()
    for dev in payload.iter():
        if dev.tag in (f"{{{OLD_NS}}}device", f"{{{TWO_NS}}}device"):
            ids.add(int(dev.get("id")))
    return sorted(ids)


async def access_model(owner, node):
    iq = await owner.plugin["xep_0060"].get_node_config(JID(owner.boundjid.bare), node)
    form = iq["pubsub_owner"]["configure"]["form"]
    return form.get_values().get("pubsub#access_model")


async def own_device_id(account):
    sm = await account.plugin["xep_0384"].get_session_manager()
    info, _ = await sm.get_own_device_information()
    return info.device_id


async def send_oldmemo(sender, recipient, body):
    msg = sender.make_message(mto=JID(recipient.boundjid.bare), mtype="chat")
    msg["body"] = body
    encrypted, errors = await sender.plugin["xep_0384"].encrypt_message(msg, JID(recipient.boundjid.bare))
    if encrypted is None:
        raise Failed(f"{sender.name}: nothing to send (errors {errors})")
    if encrypted.xml.find(f"{{{OLD_NS}}}encrypted") is None:
        raise Failed(f"{sender.name}: no legacy OMEMO element in {encrypted}")
    if body in str(encrypted):
        raise Failed("the plaintext is in the sent stanza")
    encrypted.send()
    return [str(e) for e in errors]


async def receive(recipient, sender, timeout):
    while True:
        stanza = await step(f"{recipient.name} waiting for a message from {sender.name}",
                            recipient.inbox.get(), timeout)
        if stanza["from"].bare == sender.boundjid.bare:
            return stanza


async def receive_oldmemo(recipient, sender, timeout):
    """The next legacy OMEMO message from `sender` that carries a payload, decrypted.

    A message without one is OMEMO's empty key-transport message (python-omemo sends one
    to complete a session a pre-key message started): decrypted too, and reported."""
    while True:
        stanza = await receive(recipient, sender, timeout)
        decrypted, device = await step(
            "decrypting", recipient.plugin["xep_0384"].decrypt_message(stanza), timeout)
        if stanza.xml.find(f"{{{OLD_NS}}}encrypted/{{{OLD_NS}}}payload") is None:
            emit("key_transport", recipient=recipient.name, sender=sender.name,
                 sender_device=device.device_id)
            continue
        return decrypted["body"], device


async def send_twomemo(sender, recipient, plaintext):
    """omemo:2 without SCE: python-omemo encrypts bytes with the twomemo backend only."""
    sm = await sender.plugin["xep_0384"].get_session_manager()
    messages, errors = await sm.encrypt(
        frozenset([recipient.boundjid.bare]), {TWO_NS: plaintext}, backend_priority_order=[TWO_NS])
    two = [m for m in messages if m.namespace == TWO_NS]
    if not two:
        raise Failed(f"{sender.name}: no omemo:2 message (errors {[str(e) for e in errors]})")
    msg = sender.make_message(mto=JID(recipient.boundjid.bare), mtype="chat")
    msg["body"] = "This message is OMEMO encrypted."
    msg.append(twomemo.etree.serialize_message(two[0]))
    msg.send()


async def decrypt_twomemo(recipient, stanza):
    elt = stanza.xml.find(f"{{{TWO_NS}}}encrypted")
    if elt is None:
        raise Failed("no omemo:2 <encrypted/> element")
    message = twomemo.etree.parse_message(elt, stanza["from"].bare)
    sm = await recipient.plugin["xep_0384"].get_session_manager()
    plaintext, device, _ = await sm.decrypt(message)
    return plaintext, device


async def step(name, aw, timeout):
    """`aw` within `timeout`, or Failed naming the step that never finished."""
    try:
        return await asyncio.wait_for(aw, timeout)
    except asyncio.TimeoutError:
        raise Failed(f"{name}: not done within {timeout}s") from None


async def scenario_external(args, a, peer):
    """--external-peer: only `a` here; `peer` runs another OMEMO implementation
    (tests/clients/omemo_gajim.py) that answers "re: BODY"."""
    t = args.step_timeout
    await step("keys generated and published (omemo_initialized)", a.initialized, t)
    a_id = await own_device_id(a)
    emit("published", accounts={a.name: a_id})
    for node in (OLD_DEVICELIST, f"eu.siacs.conversations.axolotl.bundles:{a_id}"):
        model = await step(f"{node} configuration", access_model(a, node), t)
        emit("node_config", owner=a.name, node=node, access_model=model)
        if model != "open":
            raise Failed(f"{a.name}'s {node} has access model {model!r}, expected open")
    peer_jid = JID(peer)
    iq = await step(f"{peer}'s device list", a.plugin["xep_0060"].get_items(peer_jid, OLD_DEVICELIST, max_items=1), t)
    ids = sorted(int(d.get("id")) for d in iq.xml.iter(f"{{{OLD_NS}}}device"))
    emit("devicelist", reader=a.name, owner=peer_jid.user, node=OLD_DEVICELIST, ids=ids)
    if not ids:
        raise Failed(f"{peer}'s device list is empty")

    class Remote:
        boundjid = peer_jid
        name = peer_jid.user

    errors = await step("encrypting (device list and bundle download)", send_oldmemo(a, Remote, args.body), t)
    emit("sent", sender=a.name, namespace=OLD_NS, errors=errors)
    body, device = await receive_oldmemo(a, Remote, t)
    emit("decrypted", recipient=a.name, sender=Remote.name, namespace=OLD_NS, body=body,
         sender_device=device.device_id)
    if body != "re: " + args.body:
        raise Failed(f"{a.name} decrypted {body!r}, expected {'re: ' + args.body!r}")
    if device.device_id not in ids:
        raise Failed(f"the answer came from device {device.device_id}, not one of {ids}")


async def scenario(args, a, b):
    t = args.step_timeout
    # 1. Keys generated and published (bundles and device lists, both namespaces).
    await step("keys generated and published (omemo_initialized)",
               asyncio.gather(a.initialized, b.initialized), t)
    a_id, b_id = await own_device_id(a), await own_device_id(b)
    emit("published", accounts={a.name: a_id, b.name: b_id})

    # Published as asked: the owner reads its nodes' configuration (XEP-0060 §8.2).
    for owner, dev in ((a, a_id), (b, b_id)):
        for node in (OLD_DEVICELIST, f"eu.siacs.conversations.axolotl.bundles:{dev}",
                     TWO_DEVICELIST, "urn:xmpp:omemo:2:bundles"):
            model = await step(f"{node} configuration", access_model(owner, node), t)
            emit("node_config", owner=owner.name, node=node, access_model=model)
            if model != "open":
                raise Failed(f"{owner.name}'s {node} has access model {model!r}, expected open")

    # 2. Each reads the other's device lists (open access, no subscription).
    for reader, owner, owner_id in ((a, b, b_id), (b, a, a_id)):
        for node in (OLD_DEVICELIST, TWO_DEVICELIST):
            ids = await step(f"{owner.name}'s {node}", read_devicelist(reader, owner, node), t)
            emit("devicelist", reader=reader.name, owner=owner.name, node=node, ids=ids)
            if owner_id not in ids:
                raise Failed(f"{owner.name}'s device {owner_id} missing from {node}: {ids}")

    # 3. Legacy OMEMO: a -> b, session built from b's bundle on the server.
    errors = await step("encrypting (device list and bundle download)", send_oldmemo(a, b, args.body), t)
    emit("sent", sender=a.name, namespace=OLD_NS, errors=errors)
    body, device = await receive_oldmemo(b, a, t)
    emit("decrypted", recipient=b.name, sender=a.name, namespace=OLD_NS, body=body,
         sender_device=device.device_id)
    if body != args.body:
        raise Failed(f"{b.name} decrypted {body!r}, expected {args.body!r}")
    if device.device_id != a_id:
        raise Failed(f"sender device {device.device_id}, expected {a_id}")

    # 4. The answer over the same session.
    reply = "re: " + args.body
    await step("encrypting the answer", send_oldmemo(b, a, reply), t)
    body, device = await receive_oldmemo(a, b, t)
    emit("decrypted", recipient=a.name, sender=b.name, namespace=OLD_NS, body=body,
         sender_device=device.device_id)
    if body != reply:
        raise Failed(f"{a.name} decrypted {body!r}, expected {reply!r}")

    # 5. omemo:2.
    if args.omemo2:
        text = ("omemo2: " + args.body).encode()
        await step("encrypting for omemo:2", send_twomemo(a, b, text), t)
        stanza = await receive(b, a, t)
        plaintext, device = await step("decrypting omemo:2", decrypt_twomemo(b, stanza), t)
        emit("decrypted", recipient=b.name, sender=a.name, namespace=TWO_NS,
             body=plaintext.decode(errors="replace"), sender_device=device.device_id)
        if plaintext != text:
            raise Failed(f"omemo:2 plaintext {plaintext!r}, expected {text!r}")


def connect(client, args):
    client.ca_certs = args.cafile
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.enable_plaintext = False
    client.connect(args.host, args.port)


async def run(args):
    with tempfile.TemporaryDirectory(prefix="omemo-") as store:
        a = Account(args.jid, args.password, store, args.mech)
        clients = [a]
        if args.external_peer is None:
            b = Account(args.peer, args.peer_password, store, args.mech)
            clients.append(b)
        for c in clients:
            connect(c, args)
        try:
            await asyncio.wait_for(asyncio.gather(*(c.session for c in clients)), args.step_timeout)
        except (Failed, asyncio.TimeoutError) as e:
            emit("error", reason=f"no session: {e!r}")
            return EXIT_NO_SESSION
        emit("session", accounts=[str(c.boundjid) for c in clients])
        try:
            if args.external_peer is None:
                await scenario(args, a, b)
            else:
                await scenario_external(args, a, args.external_peer)
        except asyncio.TimeoutError:
            emit("fail", reason="a step timed out")
            return EXIT_TIMEOUT
        except Exception as e:  # noqa: BLE001 - any library error fails the run, reported
            detail = e.iq["error"]["condition"] if isinstance(e, IqError) else str(e)
            emit("fail", reason=f"{type(e).__name__}: {detail}")
            return EXIT_FAIL
        finally:
            for c in clients:
                try:
                    await asyncio.wait_for(c.disconnect(wait=1.0), 3.0)
                except Exception:  # noqa: BLE001 - the outcome is already known
                    pass
        emit("done")
        return EXIT_OK


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True, help="the server's certificate (PEM)")
    p.add_argument("--jid", required=True, help="the sender")
    p.add_argument("--password", required=True)
    p.add_argument("--peer", help="the recipient, logged in here too")
    p.add_argument("--peer-password")
    p.add_argument("--external-peer", metavar="JID",
                   help="instead of --peer: the recipient runs another OMEMO client")
    p.add_argument("--body", default="the door code is 4711")
    p.add_argument("--mech", default="SCRAM-SHA-1", help="the SASL mechanism to use")
    p.add_argument("--omemo2", action="store_true", help="also a urn:xmpp:omemo:2 message")
    p.add_argument("--step-timeout", type=float, default=20.0)
    p.add_argument("--timeout", type=float, default=60.0, help="the whole run")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if args.external_peer is None and (args.peer is None or args.peer_password is None):
        p.error("--peer and --peer-password, or --external-peer, are required")
    return args


def main(argv):
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR,
                        format="%(levelname)-8s %(name)s %(message)s", stream=sys.stderr)
    if not args.debug:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        status = loop.run_until_complete(asyncio.wait_for(run(args), args.timeout))
    except asyncio.TimeoutError:
        emit("timeout", seconds=args.timeout)
        status = EXIT_TIMEOUT
    emit("exit", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
