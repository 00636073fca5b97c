#!/usr/bin/python3
"""PEP (XEP-0163) with slixmpp's own plugins, several accounts in one process.

The accounts (all with --password) and what each does:

  alice/phone  the publisher: XEP-0084 avatar (data, then metadata) and XEP-0172 nick with
               slixmpp's xep_0084 and xep_0172 plugins, XEP-0048 bookmarks through
               XEP-0223 (xep_0048 with method xep_0223: node `storage:bookmarks`,
               publish-options access_model=whitelist, persist_items), XEP-0054 vCard.
  alice/desk   the owner's other resource, interested (+notify) in avatars and nicks.
  bob          a contact with a mutual presence subscription, interested through XEP-0115
               caps (slixmpp's xep_0163 adds `<ns>+notify` to its disco and caps).
  carol        a contact too, but her client's caps hash is one the server has never seen
               (a random feature in her disco#info): she subscribes with a client that
               has no interests, logs out, and only after alice published logs in again
               with +notify and the new hash. The server must ask her client what the
               hash means and send her the last avatar metadata and nick (XEP-0163 §4.3).
  mallory      no presence subscription with alice at all.

Checks, each printed as {"event": "check", "name": ..., "ok": ..., "detail": ...}:

  subscribed               alice <-> bob and alice <-> carol mutually subscribed
  notify-own-resource      alice/desk gets the avatar metadata notification
  notify-contact           bob gets the avatar metadata and the nick notifications
  notify-unseen-caps       carol (unknown caps hash, logged in after the publish) gets them
  retrieve-avatar          bob fetches the avatar data item by the id in the metadata
                           (XEP-0084 §4.2) and gets the published bytes
  retrieve-max-items       bob fetches alice's nick node with max_items=1
  stranger-forbidden       mallory reading alice's nick and avatar metadata nodes
                           (access model `presence`, the default) gets an error:
                           forbidden or not-authorized (XEP-0060 §6.5.7)
  bookmarks-private        alice reads her bookmarks back (XEP-0223); bob, though
                           subscribed, gets an error reading `storage:bookmarks`
  big-avatar               a 100 KB avatar published, announced to bob and fetched whole
  max-items                publish-options pubsub#max_items=2, then three items: two kept
  node-config              the owner reads the node's configuration (access presence,
                           max_items 2), a stranger is refused, the owner opens it
                           (set_node_config access_model=open) and the stranger reads
  retract-notify           alice retracts her nick with notify: bob is told (XEP-0060
                           §7.2.2.1) and the node is empty
  purge, delete            the owner purges (no items left) and deletes the node (its
                           items are then item-not-found)
  private-storage          XEP-0049: alice stores and reads back bookmarks in private XML
                           storage (xep_0048 with method xep_0049)
  vcard                    XEP-0054: alice sets her vcard-temp, bob reads it

--skip NAME leaves a check out (it is then not run, not reported; node-management skips
max-items to delete). Exit status: 0 every
check run passed, 1 one failed, 2 an account could not log in, 3 timed out. Runs with
Debian's python3-slixmpp (1.8) and newer slixmpp.
"""

import argparse
import asyncio
import base64
import json
import logging
import os
import sys
import uuid
import xml.etree.ElementTree as ET

try:
    import slixmpp
    from slixmpp import JID
    from slixmpp.exceptions import IqError, IqTimeout
    from slixmpp.plugins.xep_0048 import Bookmarks
except ImportError as e:  # reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": f"slixmpp is not importable for {sys.executable}: {e}"}),
          flush=True)
    sys.exit(2)

EXIT_OK, EXIT_FAIL, EXIT_NO_SESSION, EXIT_TIMEOUT = 0, 1, 2, 3

NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_NICK = "http://jabber.org/protocol/nick"
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_NOTES = "urn:example:hearth:notes"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"

# A 1x1 PNG: the avatar.
AVATAR = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Failed(Exception):
    pass


def error_detail(e):
    """'condition' or 'condition + pubsub-specific condition' of an IqError."""
    cond = e.iq["error"]["condition"]
    extra = [child.tag.split("}")[1] for child in e.iq["error"].xml
             if child.tag.startswith("{" + NS_PUBSUB_ERRORS + "}")]
    return cond, extra


class Account(slixmpp.ClientXMPP):
    """One logged-in resource. `interests`: +notify for avatar metadata and nick;
    `unseen_feature`: a random disco feature, so the caps hash is new to the server."""

    def __init__(self, jid, password, mech, interests=False, unseen_feature=None):
        # One forced mechanism: slixmpp would otherwise pick a SCRAM-*-PLUS one, which
        # needs tls-exporter on TLS 1.3 and CPython has none.
        super().__init__(jid, password, sasl_mech=mech)
        self.label = jid
        loop = asyncio.get_event_loop()
        self.session = loop.create_future()
        self.events = asyncio.Queue()
        self.seen = []  # notifications taken from `events`, in order
        self.auto_authorize = True
        self.auto_subscribe = True
        for plugin in ("xep_0030", "xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0223",
                       "xep_0049", "xep_0048", "xep_0054"):
            self.register_plugin(plugin)
        self.plugin["xep_0048"].storage_method = "xep_0223"
        self.unseen_feature = unseen_feature
        self.caps_ver = None  # the XEP-0115 hash of the initial presence
        if interests:
            # session_bind of these registers `<ns>+notify` in disco and caps.
            self.register_plugin("xep_0084")
            self.register_plugin("xep_0172")
            self.add_event_handler("avatar_metadata_publish", self.on_avatar_metadata)
            self.add_event_handler("user_nick_publish", self.on_nick)
            self.add_event_handler("user_nick_retract", self.on_nick_retract)
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_auth", lambda _: self.fail("authentication failed"))
        self.add_event_handler("disconnected", lambda _: self.fail("disconnected"))

    def fail(self, reason):
        if not self.session.done():
            self.session.set_exception(Failed(f"{self.label}: {reason}"))

    async def on_session_start(self, _):
        try:
            await self.get_roster()
            if self.unseen_feature:
                # Features are kept per JID: added once the full JID is bound.
                self.plugin["xep_0030"].add_feature(self.unseen_feature, jid=self.boundjid)
            # The caps in the initial presence must already carry the +notify features.
            await self.plugin["xep_0115"].update_caps(broadcast=False)
            self.caps_ver = await self.plugin["xep_0115"].get_verstring(self.boundjid)
        except (IqError, IqTimeout) as e:
            self.fail(f"session start: {e}")
            return
        self.send_presence()
        if not self.session.done():
            self.session.set_result(True)

    # The items are read from the XML: slixmpp's xep_0060 is itself iterating over the
    # same stanza object when it calls these handlers, and the stanza's iterator state is
    # shared (iterating it again here would restart its loop forever).
    def on_avatar_metadata(self, msg):
        for item in msg["pubsub_event"]["items"].xml.findall(f"{{{NS_EVENT}}}item"):
            ids = [info.get("id") for info in item.iter(f"{{{NS_AVATAR_META}}}info")]
            self.events.put_nowait(("avatar", msg["from"].bare, item.get("id"), ids))

    def on_nick(self, msg):
        for item in msg["pubsub_event"]["items"].xml.findall(f"{{{NS_EVENT}}}item"):
            nick = item.find(f"{{{NS_NICK}}}nick")
            self.events.put_nowait(("nick", msg["from"].bare, item.get("id"),
                                    None if nick is None else nick.text))

    def on_nick_retract(self, msg):
        for r in msg["pubsub_event"]["items"].xml.findall(f"{{{NS_EVENT}}}retract"):
            self.events.put_nowait(("nick-retract", msg["from"].bare, r.get("id"), None))

    async def wait_event(self, kind, publisher, timeout):
        """The first notification of `kind` from `publisher`, in whatever order they came."""
        return await self.wait_event_matching(kind, publisher, lambda _: True, timeout)

    async def wait_event_matching(self, kind, publisher, pred, timeout):
        """The first notification of `kind` from `publisher` whose last field satisfies
        `pred`."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while True:
            for ev in self.seen:
                if ev[0] == kind and ev[1] == publisher and pred(ev[3]):
                    return ev
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            self.seen.append(await asyncio.wait_for(self.events.get(), left))


async def login(jid, args, **kw):
    client = Account(jid, args.password, args.mech, **kw)
    client.ca_certs = args.cafile
    if hasattr(client, "enable_direct_tls"):
        # slixmpp >= 1.9: the transport is chosen by attributes, connect(host, port).
        client.enable_direct_tls = False
        client.enable_starttls = True
        client.enable_plaintext = False
        client.connect(args.host, args.port)
    else:
        # slixmpp 1.8 (Debian 12): connect((host, port), use_ssl, force_starttls).
        client.connect((args.host, args.port), use_ssl=False, force_starttls=True)
    await asyncio.wait_for(client.session, args.step_timeout)
    emit("session", jid=str(client.boundjid))
    return client


async def logout(client):
    try:
        await asyncio.wait_for(client.disconnect(wait=1.0), 3.0)
    except Exception:  # noqa: BLE001 - only tidying up
        pass


async def wait_subscribed(client, contact, timeout):
    """Until `client`'s roster shows a mutual subscription with `contact` (roster pushes
    from the server are what changes it)."""
    loop = asyncio.get_event_loop()
    deadline = loop.time() + timeout
    while client.client_roster[contact]["subscription"] != "both":
        if loop.time() > deadline:
            raise Failed(f"{client.label}: subscription with {contact} is "
                         f"{client.client_roster[contact]['subscription']!r}, not both")
        await asyncio.sleep(0.05)


def publish_options(client, **fields):
    """A XEP-0060 §7.1.5 publish-options form."""
    form = client.plugin["xep_0004"].stanza.Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#publish-options")
    for var, value in fields.items():
        form.add_field(var=var, value=value)
    return form


def item_ids(iq):
    return [i.get("id") for i in iq["pubsub"]["items"].xml.findall(f"{{{NS_PUBSUB}}}item")]


async def expect_error(coro, allowed):
    try:
        await coro
    except IqError as e:
        cond, extra = error_detail(e)
        return cond in allowed, f"{cond} {extra}"
    return False, "a result where an error was expected"


async def run(args):
    t = args.step_timeout
    domain = JID(args.alice).domain
    alice_bare = JID(args.alice).bare
    failed = 0
    skip = set(args.skip)

    def report(name, ok, detail):
        nonlocal failed
        failed += 0 if ok else 1
        emit("check", name=name, ok=ok, detail=detail)

    clients = []
    try:
        try:
            alice = await login(f"{alice_bare}/phone", args, interests=True)
            clients.append(alice)
            desk = await login(f"{alice_bare}/desk", args, interests=True)
            clients.append(desk)
            bob = await login(args.bob, args, interests=True)
            clients.append(bob)
            carol_first = await login(args.carol, args)
            clients.append(carol_first)
            mallory = await login(args.mallory, args)
            clients.append(mallory)
        except (Failed, asyncio.TimeoutError) as e:
            emit("error", reason=f"no session: {e!r}")
            return EXIT_NO_SESSION
        bob_bare, carol_bare = JID(args.bob).bare, JID(args.carol).bare

        # Mutual subscriptions (RFC 6121 §3): alice asks, each contact's client approves
        # and asks back (auto_authorize, auto_subscribe), alice's approves.
        for contact in (bob_bare, carol_bare):
            alice.send_presence_subscription(pto=contact)
        try:
            await wait_subscribed(alice, bob_bare, t)
            await wait_subscribed(alice, carol_bare, t)
            await wait_subscribed(bob, alice_bare, t)
            await wait_subscribed(carol_first, alice_bare, t)
            report("subscribed", True, "both")
        except Failed as e:
            report("subscribed", False, str(e))
            return EXIT_FAIL
        await logout(carol_first)
        clients.remove(carol_first)
        # No presence sent again: alice's PEP service learns bob's caps from the presence
        # his server sends when her subscription to him is approved (RFC 6121 §3.1.5), as
        # with a real client that does not know it should.

        # Publish: avatar data, then metadata pointing at it (XEP-0084 §4.1), then nick.
        avatar_id = alice.plugin["xep_0084"].generate_id(AVATAR)
        await asyncio.wait_for(alice.plugin["xep_0084"].publish_avatar(AVATAR), t)
        await asyncio.wait_for(alice.plugin["xep_0084"].publish_avatar_metadata(
            [{"id": avatar_id, "type": "image/png", "bytes": str(len(AVATAR)),
              "width": "1", "height": "1"}]), t)
        await asyncio.wait_for(alice.plugin["xep_0172"].publish_nick("Alice"), t)
        emit("published", avatar_id=avatar_id)

        async def notified(name, client):
            try:
                _, _, item_id, ids = await client.wait_event("avatar", alice_bare, t)
                ok = avatar_id in ids
                detail = f"avatar item {item_id} ids {ids}"
                if name != "notify-own-resource":
                    _, _, _, nick = await client.wait_event("nick", alice_bare, t)
                    ok = ok and nick == "Alice"
                    detail += f", nick {nick!r}"
                report(name, ok, detail)
            except asyncio.TimeoutError:
                report(name, False, f"no notification within {t}s")

        await notified("notify-own-resource", desk)
        await notified("notify-contact", bob)

        # carol back, with an unseen caps hash and +notify: the last items come to her.
        feature = f"urn:example:hearth:unseen:{uuid.uuid4().hex}"
        try:
            carol = await login(args.carol, args, interests=True, unseen_feature=feature)
            clients.append(carol)
            emit("caps", jid=str(carol.boundjid), feature=feature,
                 ver=carol.caps_ver)
            await notified("notify-unseen-caps", carol)
        except (Failed, asyncio.TimeoutError) as e:
            report("notify-unseen-caps", False, f"carol's second login: {e!r}")

        # Retrieval by a contact.
        try:
            iq = await asyncio.wait_for(bob.plugin["xep_0084"].retrieve_avatar(JID(alice_bare), avatar_id), t)
            value = iq["pubsub"]["items"]["item"]["avatar_data"]["value"]
            report("retrieve-avatar", value == AVATAR, f"{len(value)} bytes")
        except (IqError, IqTimeout, asyncio.TimeoutError) as e:
            report("retrieve-avatar", False, repr(e))
        try:
            iq = await asyncio.wait_for(
                bob.plugin["xep_0060"].get_items(JID(alice_bare), NS_NICK, max_items=1), t)
            nicks = [n.text for n in iq["pubsub"]["items"].xml.iter(f"{{{NS_NICK}}}nick")]
            report("retrieve-max-items", nicks == ["Alice"], f"nicks {nicks}")
        except (IqError, IqTimeout, asyncio.TimeoutError) as e:
            report("retrieve-max-items", False, repr(e))

        # A stranger: presence-access nodes are closed to him.
        details = []
        ok_all = True
        for node in (NS_NICK, NS_AVATAR_META):
            ok, detail = await asyncio.wait_for(expect_error(
                mallory.plugin["xep_0060"].get_items(JID(alice_bare), node),
                {"forbidden", "not-authorized"}), t)
            ok_all = ok_all and ok
            details.append(f"{node}: {detail}")
        report("stranger-forbidden", ok_all, "; ".join(details))

        # Bookmarks in a whitelist node (XEP-0223).
        if "bookmarks-private" not in skip:
            marks = Bookmarks()
            marks.add_conference(f"family@conference.{domain}", "alice", name="Family", autojoin=True)
            try:
                await asyncio.wait_for(alice.plugin["xep_0048"].set_bookmarks(marks, method="xep_0223"), t)
                iq = await asyncio.wait_for(alice.plugin["xep_0048"].get_bookmarks(method="xep_0223"), t)
                confs = [str(c["jid"]) for c in iq["pubsub"]["items"]["item"]["bookmarks"]["conferences"]]
                own_ok = confs == [f"family@conference.{domain}"]
                ok, detail = await asyncio.wait_for(expect_error(
                    bob.plugin["xep_0060"].get_items(JID(alice_bare), "storage:bookmarks"),
                    {"forbidden", "not-authorized", "not-allowed", "item-not-found"}), t)
                report("bookmarks-private", own_ok and ok, f"own read {confs}; bob: {detail}")
            except (IqError, IqTimeout, asyncio.TimeoutError) as e:
                report("bookmarks-private", False, repr(e))

        if "big-avatar" not in skip:
            # A phone's photo avatar, not a 1x1 pixel: 100 KB of data (136 KB of base64 in
            # the item), published, announced and fetched back whole.
            big = os.urandom(100 * 1024)
            big_id = alice.plugin["xep_0084"].generate_id(big)
            try:
                started = asyncio.get_event_loop().time()
                await asyncio.wait_for(alice.plugin["xep_0084"].publish_avatar(big), t)
                await asyncio.wait_for(alice.plugin["xep_0084"].publish_avatar_metadata(
                    [{"id": big_id, "type": "image/png", "bytes": str(len(big))}]), t)
                _, _, _, ids = await bob.wait_event_matching(
                    "avatar", alice_bare, lambda ids: big_id in ids, t)
                iq = await asyncio.wait_for(
                    bob.plugin["xep_0084"].retrieve_avatar(JID(alice_bare), big_id), t)
                value = iq["pubsub"]["items"]["item"]["avatar_data"]["value"]
                took = asyncio.get_event_loop().time() - started
                report("big-avatar", value == big,
                       f"{len(value)} bytes back, publish to fetched in {took:.2f}s")
            except (IqError, IqTimeout, asyncio.TimeoutError) as e:
                report("big-avatar", False, repr(e))

        if "node-management" not in skip:
            await node_management(args, alice, bob, mallory, report)

        if "private-storage" not in skip:
            marks = Bookmarks()
            marks.add_conference(f"kitchen@conference.{domain}", "alice", name="Kitchen")
            try:
                await asyncio.wait_for(alice.plugin["xep_0048"].set_bookmarks(marks, method="xep_0049"), t)
                iq = await asyncio.wait_for(alice.plugin["xep_0048"].get_bookmarks(method="xep_0049"), t)
                confs = [str(c["jid"]) for c in iq["private"]["bookmarks"]["conferences"]]
                report("private-storage", f"kitchen@conference.{domain}" in confs, f"read back {confs}")
            except (IqError, IqTimeout, asyncio.TimeoutError) as e:
                report("private-storage", False, repr(e))

        if "vcard" not in skip:
            try:
                vcard = alice.plugin["xep_0054"].stanza.VCardTemp()
                vcard["FN"] = "Alice Example"
                vcard["NICKNAME"] = "Alice"
                await asyncio.wait_for(alice.plugin["xep_0054"].publish_vcard(vcard), t)
                iq = await asyncio.wait_for(
                    bob.plugin["xep_0054"].get_vcard(JID(alice_bare), local=False, cached=False), t)
                fn = iq["vcard_temp"]["FN"]
                report("vcard", fn == "Alice Example", f"FN {fn!r}")
            except (IqError, IqTimeout, asyncio.TimeoutError) as e:
                report("vcard", False, repr(e))
    except asyncio.TimeoutError:
        emit("fail", reason="a step timed out")
        return EXIT_TIMEOUT
    except Exception as e:  # noqa: BLE001 - any library error fails the run, reported
        logging.exception("run failed")
        emit("fail", reason=f"{type(e).__name__}: {e}")
        return EXIT_FAIL
    finally:
        for c in clients:
            await logout(c)
    emit("done", failed=failed)
    return EXIT_OK if failed == 0 else EXIT_FAIL


async def node_management(args, alice, bob, mallory, report):
    """The owner's side of XEP-0060 with slixmpp's xep_0060: max_items from
    publish-options, node configuration read and changed, retract with notify, purge,
    delete."""
    t = args.step_timeout
    ps = alice.plugin["xep_0060"]
    own = JID(alice.boundjid.bare)

    def note(text):
        el = ET.Element(f"{{{NS_NOTES}}}note")
        el.text = text
        return el

    try:
        for i in ("a", "b", "c"):
            await asyncio.wait_for(ps.publish(own, NS_NOTES, id=i, payload=note(i), options=publish_options(
                alice, **{"pubsub#max_items": "2", "pubsub#access_model": "presence"})), t)
        ids = item_ids(await asyncio.wait_for(ps.get_items(own, NS_NOTES), t))
        report("max-items", sorted(ids) == ["b", "c"], f"items {ids} after a, b, c with max_items 2")
    except (IqError, IqTimeout, asyncio.TimeoutError) as e:
        report("max-items", False, repr(e))
        return

    try:
        iq = await asyncio.wait_for(ps.get_node_config(own, NS_NOTES), t)
        values = iq["pubsub_owner"]["configure"]["form"].get_values()
        before = values.get("pubsub#access_model"), str(values.get("pubsub#max_items"))
        refused, why = await asyncio.wait_for(expect_error(
            mallory.plugin["xep_0060"].get_items(own, NS_NOTES), {"forbidden", "not-authorized"}), t)
        form = alice.plugin["xep_0004"].stanza.Form()
        form["type"] = "submit"
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/pubsub#node_config")
        form.add_field(var="pubsub#access_model", value="open")
        await asyncio.wait_for(ps.set_node_config(own, NS_NOTES, form), t)
        ids = item_ids(await asyncio.wait_for(mallory.plugin["xep_0060"].get_items(own, NS_NOTES), t))
        ok = before == ("presence", "2") and refused and sorted(ids) == ["b", "c"]
        report("node-config", ok, f"config {before}; stranger before: {why}; after open: {ids}")
    except (IqError, IqTimeout, asyncio.TimeoutError) as e:
        report("node-config", False, repr(e))

    try:
        await asyncio.wait_for(ps.retract(own, NS_NICK, "current", notify=True), t)
        _, _, rid, _ = await bob.wait_event("nick-retract", own.bare, t)
        left = item_ids(await asyncio.wait_for(bob.plugin["xep_0060"].get_items(own, NS_NICK), t))
        report("retract-notify", rid == "current" and left == [], f"retracted {rid}; left {left}")
    except asyncio.TimeoutError:
        report("retract-notify", False, f"no retraction notification within {t}s")
    except (IqError, IqTimeout) as e:
        report("retract-notify", False, repr(e))

    try:
        await asyncio.wait_for(ps.purge(own, NS_NOTES), t)
        ids = item_ids(await asyncio.wait_for(ps.get_items(own, NS_NOTES), t))
        report("purge", ids == [], f"items after purge {ids}")
        await asyncio.wait_for(ps.delete_node(own, NS_NOTES), t)
        ok, why = await asyncio.wait_for(expect_error(ps.get_items(own, NS_NOTES), {"item-not-found"}), t)
        report("delete", ok, f"items of the deleted node: {why}")
    except (IqError, IqTimeout, asyncio.TimeoutError) as e:
        report("purge", False, repr(e))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True, help="the server's certificate (PEM)")
    p.add_argument("--alice", required=True, help="the publisher's bare JID")
    p.add_argument("--bob", required=True)
    p.add_argument("--carol", required=True)
    p.add_argument("--mallory", required=True)
    p.add_argument("--password", required=True, help="every account's password")
    p.add_argument("--mech", default="SCRAM-SHA-1", help="the SASL mechanism to use")
    p.add_argument("--skip", action="append", default=[], help="a check to leave out")
    p.add_argument("--step-timeout", type=float, default=15.0)
    p.add_argument("--timeout", type=float, default=90.0, help="the whole run")
    p.add_argument("--debug", action="store_true")
    return p.parse_args(argv)


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
