#!/usr/bin/env python3
"""PEP (XEP-0163) with aioxmpp 0.13's own services, several accounts in one process.

aioxmpp is a strict library (it drops an iq reply whose `from` is not what it asked) with
its own PEP stack: aioxmpp.PEPClient (publish with a `pubsub#access_model`
precondition), aioxmpp.AvatarService (XEP-0084 data and metadata, +notify claimed through
aioxmpp.EntityCapsService's XEP-0115 caps), aioxmpp.BookmarkClient (XEP-0048 in XEP-0049
private storage), aioxmpp.vcard.VCardService (XEP-0054) and aioxmpp.PubSubClient.

  alice    publishes an avatar with AvatarService.publish_avatar_set (data, then metadata),
           XEP-0402 bookmarks with PubSubClient.publish and the publish-options XEP-0402
           asks for (`access_model=whitelist`, `persist_items`, `max_items=max`),
           XEP-0048 bookmarks with BookmarkClient and a vCard photo with VCardService.
  bob      mutually subscribed; AvatarService claims the metadata node with notify=True,
           so his caps carry `urn:xmpp:avatar:metadata+notify`.
  carol    mutually subscribed; logs in again after alice published, with one more,
           random, disco feature, so her caps hash is one the server has never seen.
  mallory  no presence subscription.

Checks ({"event": "check", "name", "ok", "detail"}):

  subscribed          alice <-> bob and alice <-> carol mutually subscribed (RosterClient)
  notify-contact      bob's AvatarService.on_metadata_changed fires for alice's avatar
  notify-unseen-caps  the same for carol, logged in after the publish with a new hash
  retrieve-avatar     bob: get_avatar_metadata(require_fresh) and get_image_bytes()
  stranger-forbidden  mallory reading alice's avatar metadata: forbidden or
                      not-authorized (XEP-0060 §6.5.7)
  bookmarks-pep       alice reads her XEP-0402 conference back (get_items_by_id); bob
                      gets an error reading urn:xmpp:bookmarks:1
  private-bookmarks   XEP-0049: BookmarkClient set_bookmarks, then get_bookmarks
  avatar-vcard        XEP-0398: bob reads alice's PEP avatar as her vCard photo; XEP-0153:
                      her presence carries its hash
  bookmarks-compat    XEP-0411: the XEP-0049 bookmarks are in the XEP-0402 node and the
                      other way round
  vcard               XEP-0054: alice sets a vCard photo, bob reads the same bytes

--skip NAME leaves a check out. Exit status: 0 every check run passed, 1 one failed, 2 an
account could not log in, 3 timed out. The certificate is not verified (`no_verify`): the
test talks to its own server on loopback.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import sys
import uuid

try:
    import aioxmpp
    import aioxmpp.avatar
    import aioxmpp.bookmarks
    import aioxmpp.disco
    import aioxmpp.forms
    import aioxmpp.pubsub
    import aioxmpp.vcard
    import aioxmpp.xso as xso
except ImportError as e:  # reported as a JSON line like any failure
    print(json.dumps({"event": "error", "reason": f"aioxmpp is not importable for {sys.executable}: {e}"}),
          flush=True)
    sys.exit(2)

EXIT_OK, EXIT_FAIL, EXIT_NO_SESSION, EXIT_TIMEOUT = 0, 1, 2, 3

NS_BOOKMARKS2 = "urn:xmpp:bookmarks:1"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"

AVATAR = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PHOTO = b"\x89PNG not really, but bytes a vCard carries as base64 \x00\x01\x02"


@aioxmpp.pubsub.xso.as_payload_class
class Conference(xso.XSO):
    """XEP-0402 §3: a group chat bookmark, the item id being the room's JID."""

    TAG = (NS_BOOKMARKS2, "conference")
    name = xso.Attr("name", default=None)
    autojoin = xso.Attr("autojoin", type_=xso.Bool(), default=False)
    nick = xso.ChildText((NS_BOOKMARKS2, "nick"), default=None)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


class Failed(Exception):
    pass


class Account:
    """One logged-in aioxmpp client with the services the checks use."""

    def __init__(self, jid, args, unseen_feature=None):
        self.jid = aioxmpp.JID.fromstr(jid)
        self.label = jid
        self.client = aioxmpp.Client(
            self.jid,
            aioxmpp.make_security_layer(args.password, no_verify=True),
            override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
        )
        c = self.client
        self.roster = c.summon(aioxmpp.RosterClient)
        self.caps = c.summon(aioxmpp.EntityCapsService)
        self.disco_server = c.summon(aioxmpp.DiscoServer)
        self.pubsub = c.summon(aioxmpp.PubSubClient)
        self.avatar = c.summon(aioxmpp.AvatarService)
        self.vcard = c.summon(aioxmpp.vcard.VCardService)
        self.bookmarks = c.summon(aioxmpp.BookmarkClient)
        if unseen_feature:
            self.disco_server.register_feature(unseen_feature)
        # Accept every subscription request and ask back (the roster test's contacts).
        self.roster.on_subscribe.connect(self.on_subscribe)
        self.metadata = asyncio.Queue()
        self.avatar.on_metadata_changed.connect(self.on_metadata)
        # XEP-0153 photo hashes seen in available presence, by bare JID.
        self.photos = {}
        presence = c.summon(aioxmpp.PresenceClient)
        presence.on_available.connect(self.on_presence)
        presence.on_changed.connect(self.on_presence)
        self.ctx = None

    def on_subscribe(self, stanza):
        peer = stanza.from_.bare()
        self.roster.approve(peer)
        self.roster.subscribe(peer)

    def on_presence(self, full_jid, stanza):
        x = stanza.xep0153_x
        if x is not None and x.photo is not None:
            self.photos[str(full_jid.bare())] = x.photo

    def on_metadata(self, jid, metadata):
        # Only what came over PEP: AvatarService also fires for the XEP-0153 photo hash
        # in presence (which Prosody, for one, derives from the PEP avatar).
        pep = [d.id_ for d in metadata if isinstance(d, aioxmpp.avatar.service.PubsubAvatarDescriptor)]
        emit("metadata", account=self.label, publisher=str(jid),
             descriptors=[f"{type(d).__name__}:{d.id_}" for d in metadata])
        self.metadata.put_nowait((jid.bare(), pep))

    async def login(self, timeout):
        self.ctx = self.client.connected(presence=aioxmpp.PresenceState(True))
        await asyncio.wait_for(self.ctx.__aenter__(), timeout)
        emit("session", jid=str(self.client.local_jid))

    async def logout(self):
        if self.ctx is None:
            return
        ctx, self.ctx = self.ctx, None
        try:
            await asyncio.wait_for(ctx.__aexit__(None, None, None), 5)
        except Exception:  # noqa: BLE001 - only tidying up
            pass

    def subscription(self, peer):
        item = self.roster.items.get(peer)
        return None if item is None else item.subscription

    async def wait_subscribed(self, peer, timeout):
        """Until the roster (its pushes) shows a mutual subscription with `peer`."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while self.subscription(peer) != "both":
            if loop.time() > deadline:
                raise Failed(f"{self.label}: subscription with {peer} is {self.subscription(peer)!r}")
            await asyncio.sleep(0.05)

    async def wait_metadata(self, publisher, avatar_id, timeout):
        """The avatar metadata notification from `publisher` naming `avatar_id`."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError
            jid, ids = await asyncio.wait_for(self.metadata.get(), left)
            if jid == publisher and avatar_id in ids:
                return ids


def condition(e):
    return e.condition.value[1] if hasattr(e.condition, "value") else str(e.condition)


async def expect_error(coro, allowed):
    try:
        await coro
    except aioxmpp.errors.XMPPError as e:
        cond = condition(e)
        return cond in allowed, cond
    return False, "a result where an error was expected"


def publish_options(**fields):
    """A XEP-0060 §7.1.5 publish-options form."""
    form = aioxmpp.forms.Data(aioxmpp.forms.DataType.SUBMIT)
    form.fields.append(aioxmpp.forms.Field(
        type_=aioxmpp.forms.FieldType.HIDDEN, var="FORM_TYPE",
        values=["http://jabber.org/protocol/pubsub#publish-options"]))
    for var, value in fields.items():
        form.fields.append(aioxmpp.forms.Field(var=var, values=[value]))
    return form


async def run(args):
    t = args.step_timeout
    skip = set(args.skip)
    alice_bare = aioxmpp.JID.fromstr(args.alice).bare()
    bob_bare = aioxmpp.JID.fromstr(args.bob).bare()
    carol_bare = aioxmpp.JID.fromstr(args.carol).bare()
    domain = alice_bare.domain
    failed = 0
    accounts = []

    def report(name, ok, detail):
        nonlocal failed
        failed += 0 if ok else 1
        emit("check", name=name, ok=ok, detail=detail)

    try:
        try:
            alice = Account(f"{alice_bare}/laptop", args)
            bob = Account(str(bob_bare), args)
            carol_first = Account(str(carol_bare), args)
            mallory = Account(args.mallory, args)
            for a in (alice, bob, carol_first, mallory):
                accounts.append(a)
                await a.login(t)
        except Exception as e:  # noqa: BLE001 - any failure to log in ends the run
            emit("error", reason=f"no session: {type(e).__name__}: {e}")
            return EXIT_NO_SESSION

        alice.roster.subscribe(bob_bare)
        alice.roster.subscribe(carol_bare)
        try:
            await alice.wait_subscribed(bob_bare, t)
            await alice.wait_subscribed(carol_bare, t)
            await bob.wait_subscribed(alice_bare, t)
            await carol_first.wait_subscribed(alice_bare, t)
            report("subscribed", True, "both")
        except Failed as e:
            report("subscribed", False, str(e))
            return EXIT_FAIL
        await carol_first.logout()
        accounts.remove(carol_first)

        # XEP-0084 §4.1: data, then metadata (AvatarService does both, in that order).
        avatar_set = aioxmpp.avatar.AvatarSet()
        avatar_set.add_avatar_image("image/png", image_bytes=AVATAR, width=1, height=1)
        avatar_id = hashlib.sha1(AVATAR).hexdigest()
        await asyncio.wait_for(alice.avatar.publish_avatar_set(avatar_set), t)
        emit("published", avatar_id=avatar_id)

        try:
            ids = await bob.wait_metadata(alice_bare, avatar_id, t)
            report("notify-contact", True, f"ids {ids}")
        except asyncio.TimeoutError:
            report("notify-contact", False, f"no metadata notification within {t}s")

        feature = f"urn:example:hearth:unseen:{uuid.uuid4().hex}"
        carol = Account(str(carol_bare), args, unseen_feature=feature)
        accounts.append(carol)
        try:
            await carol.login(t)
            emit("caps", jid=str(carol.client.local_jid), feature=feature)
            ids = await carol.wait_metadata(alice_bare, avatar_id, t)
            report("notify-unseen-caps", True, f"ids {ids}")
        except asyncio.TimeoutError:
            report("notify-unseen-caps", False, f"no metadata notification within {t}s")
        except Exception as e:  # noqa: BLE001 - reported, the run fails
            report("notify-unseen-caps", False, f"{type(e).__name__}: {e}")

        try:
            descs = await asyncio.wait_for(
                bob.avatar.get_avatar_metadata(alice_bare, require_fresh=True), t)
            pep = [d for d in descs if d.id_ == avatar_id and d.can_get_image_bytes_via_xmpp]
            if not pep:
                report("retrieve-avatar", False, f"metadata {[d.id_ for d in descs]}")
            else:
                data = await asyncio.wait_for(pep[0].get_image_bytes(), t)
                report("retrieve-avatar", data == AVATAR, f"{len(data)} bytes")
        except Exception as e:  # noqa: BLE001 - reported, the run fails
            report("retrieve-avatar", False, f"{type(e).__name__}: {e}")

        ok, cond = await asyncio.wait_for(expect_error(
            mallory.pubsub.get_items(alice_bare, NS_AVATAR_META),
            {"forbidden", "not-authorized"}), t)
        report("stranger-forbidden", ok, cond)

        if "avatar-vcard" not in skip:
            # XEP-0398: the PEP avatar is the vCard photo too, and XEP-0153: the hash of
            # it goes into the owner's available presence (sent again here).
            try:
                card = await asyncio.wait_for(bob.vcard.get_vcard(alice_bare), t)
                photo = card.get_photo_data()
                alice.client.summon(aioxmpp.PresenceServer).resend_presence()
                loop = asyncio.get_event_loop()
                deadline = loop.time() + t
                while bob.photos.get(str(alice_bare)) != avatar_id and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                seen = bob.photos.get(str(alice_bare))
                report("avatar-vcard", photo == AVATAR and seen == avatar_id,
                       f"vCard photo {None if photo is None else len(photo)} bytes; "
                       f"presence photo hash {seen}")
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                report("avatar-vcard", False, f"{type(e).__name__}: {e}")

        if "bookmarks-pep" not in skip:
            room = f"family@conference.{domain}"
            conf = Conference()
            conf.name, conf.autojoin, conf.nick = "Family", True, "alice"
            try:
                await asyncio.wait_for(alice.pubsub.publish(
                    None, NS_BOOKMARKS2, conf, id_=room,
                    publish_options=publish_options(**{
                        "pubsub#persist_items": "true",
                        "pubsub#max_items": "max",
                        "pubsub#send_last_published_item": "never",
                        "pubsub#access_model": "whitelist"})), t)
                res = await asyncio.wait_for(
                    alice.pubsub.get_items_by_id(alice_bare, NS_BOOKMARKS2, [room]), t)
                got = [(i.id_, i.registered_payload.name) for i in res.payload.items]
                own_ok = got == [(room, "Family")]
                ok, cond = await asyncio.wait_for(expect_error(
                    bob.pubsub.get_items(alice_bare, NS_BOOKMARKS2),
                    {"forbidden", "not-authorized", "not-allowed", "item-not-found"}), t)
                report("bookmarks-pep", own_ok and ok, f"own read {got}; bob: {cond}")
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                report("bookmarks-pep", False, f"{type(e).__name__}: {e}")

        if "private-bookmarks" not in skip:
            room = aioxmpp.JID.fromstr(f"kitchen@conference.{domain}")
            try:
                await asyncio.wait_for(alice.bookmarks.set_bookmarks(
                    [aioxmpp.bookmarks.Conference("Kitchen", room, nick="alice")]), t)
                marks = await asyncio.wait_for(alice.bookmarks.get_bookmarks(), t)
                rooms = [str(m.jid) for m in marks]
                report("private-bookmarks", rooms == [str(room)], f"read back {rooms}")
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                report("private-bookmarks", False, f"{type(e).__name__}: {e}")

        if "bookmarks-compat" not in skip:
            # XEP-0411: bookmarks in private storage (XEP-0049) and in PEP (XEP-0402) are
            # one list: what BookmarkClient stored is a PEP item, and a PEP item is in
            # what BookmarkClient reads.
            try:
                kitchen = f"kitchen@conference.{domain}"
                res = await asyncio.wait_for(
                    alice.pubsub.get_items(alice_bare, NS_BOOKMARKS2), t)
                in_pep = [i.id_ for i in res.payload.items]
                garden = f"garden@conference.{domain}"
                conf = Conference()
                conf.name, conf.autojoin, conf.nick = "Garden", False, "alice"
                await asyncio.wait_for(alice.pubsub.publish(
                    None, NS_BOOKMARKS2, conf, id_=garden,
                    publish_options=publish_options(**{
                        "pubsub#persist_items": "true",
                        "pubsub#max_items": "max",
                        "pubsub#send_last_published_item": "never",
                        "pubsub#access_model": "whitelist"})), t)
                marks = await asyncio.wait_for(alice.bookmarks.get_bookmarks(), t)
                in_private = sorted(str(m.jid) for m in marks)
                ok = kitchen in in_pep and garden in in_private
                report("bookmarks-compat", ok, f"PEP after XEP-0049 set: {in_pep}; "
                       f"XEP-0049 after XEP-0402 publish: {in_private}")
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                report("bookmarks-compat", False, f"{type(e).__name__}: {e}")

        if "vcard" not in skip:
            try:
                card = await asyncio.wait_for(alice.vcard.get_vcard(), t)
                card.set_photo_data("image/png", PHOTO)
                await asyncio.wait_for(alice.vcard.set_vcard(card), t)
                theirs = await asyncio.wait_for(bob.vcard.get_vcard(alice_bare), t)
                photo = theirs.get_photo_data()
                report("vcard", photo == PHOTO, f"photo {None if photo is None else len(photo)} bytes")
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                report("vcard", False, f"{type(e).__name__}: {e}")
    except asyncio.TimeoutError:
        emit("fail", reason="a step timed out")
        return EXIT_TIMEOUT
    except Exception as e:  # noqa: BLE001 - any library error fails the run, reported
        logging.exception("run failed")
        emit("fail", reason=f"{type(e).__name__}: {e}")
        return EXIT_FAIL
    finally:
        for a in accounts:
            await a.logout()
    emit("done", failed=failed)
    return EXIT_OK if failed == 0 else EXIT_FAIL


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--alice", required=True)
    p.add_argument("--bob", required=True)
    p.add_argument("--carol", required=True)
    p.add_argument("--mallory", required=True)
    p.add_argument("--password", required=True, help="every account's password")
    p.add_argument("--skip", action="append", default=[])
    p.add_argument("--step-timeout", type=float, default=15.0)
    p.add_argument("--timeout", type=float, default=90.0, help="the whole run")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr)

    async def bounded():
        try:
            return await asyncio.wait_for(run(args), args.timeout)
        except asyncio.TimeoutError:
            emit("timeout", seconds=args.timeout)
            return EXIT_TIMEOUT

    status = asyncio.run(bounded())
    emit("exit", status=status)
    sys.exit(status)


if __name__ == "__main__":
    main()
