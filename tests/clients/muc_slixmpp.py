#!/usr/bin/python3
"""XEP-0045 group chat with slixmpp's own xep_0045 plugin, driven by a list of steps.

Connects like xmpp_client.py (STARTTLS, one forced SASL mechanism), then runs the JSON
list given with --steps, one step after the other. Every line on stdout that matters is
a JSON object with an "event" key. Everything the client sees in rooms is printed as it
comes: "groupchat" (room, nick, body, delayed, stanza_id), "subject", "muc_presence"
(room, nick, type, role, affiliation, codes, jid), "invite", "message_error".

Steps ({"do": ...}):
  join room nick [password] [maxstanzas]   join_muc_wait; prints "joined" (codes, history
                                           bodies, subject, occupants) or "join_error"
  configure room fields{var: value}        get the owner form, fill it, submit it
  instant room                             accept the default configuration (§10.1.2)
  say room body / subject room subject     groupchat message / subject change
  pm room nick body                        private message (§7.5)
  wait_body room body                      until a groupchat message with that body came
  wait_event name [count]                  until that many events of that name came
  role room nick role [reason] / affiliation room jid affiliation [reason]
                                           admin iqs; print "admin_ok" or "admin_error"
  destroy room [reason]                    owner destroy; "destroyed" or "admin_error"
  invite room jid [reason]                 a mediated invitation (§7.8.2)
  disco_items to / disco_info to           print "disco_items" / "disco_info"
  bookmarks                                print the XEP-0048 bookmarks read through XEP-0049
  mam room [max]                           XEP-0313 with slixmpp's xep_0313 to the room,
                                           page by page: print "mam" (bodies, ids, pages)
  moderate room body [reason]              XEP-0425 (slixmpp's xep_0425, version 0.2) on
                                           the message seen with that body; "moderate_ok"
                                           or "moderate_error"; retractions seen print
                                           "moderated"
  leave room nick / ready / sleep s
A step that fails prints "error" and the client exits 1; at the end it exits 0.
"""

import argparse
import asyncio
import json
import logging
import ssl
import sys

try:
    import slixmpp
    from slixmpp.exceptions import IqError, IqTimeout, PresenceError
except ImportError:  # pragma: no cover
    print(json.dumps({"event": "error", "reason": "slixmpp is not installed for " + sys.executable}),
          flush=True)
    sys.exit(1)

NS_USER = "http://jabber.org/protocol/muc#user"
NS_SID = "urn:xmpp:sid:0"


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def codes_of(stanza):
    x = stanza.xml.find("{%s}x" % NS_USER)
    if x is None:
        return []
    return sorted(int(s.get("code")) for s in x.findall("{%s}status" % NS_USER) if s.get("code"))


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password, sasl_mech=args.mech)
        self.args = args
        self.result = None
        self.counts = {}
        self.bodies = []
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0203")
        self.register_plugin("xep_0199", {"keepalive": False})
        self.register_plugin("xep_0059")
        self.register_plugin("xep_0313")
        self.register_plugin("xep_0425")
        self.register_plugin("xep_0048")
        self.add_event_handler("moderated_message", self.on_moderated)
        self.sids = {}
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("failed_all_auth", lambda _e: self.finish(2))
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("groupchat_message", self.on_groupchat)
        self.add_event_handler("groupchat_subject", self.on_subject)
        self.add_event_handler("groupchat_presence", self.on_presence)
        self.add_event_handler("groupchat_invite", self.on_invite)
        self.add_event_handler("message_error", self.on_message_error)
        self.add_event_handler("message", self.on_message)

    def count(self, name):
        self.counts[name] = self.counts.get(name, 0) + 1

    def finish(self, status):
        if self.result is not None and not self.result.done():
            self.result.set_result(status)

    def on_disconnected(self, reason=None):
        if self.result is not None and not self.result.done():
            emit("error", reason="disconnected", detail=str(reason))
            self.finish(1)

    def on_groupchat(self, msg):
        if not msg["body"]:
            return
        delay = msg.xml.find("{urn:xmpp:delay}delay")
        sid = msg.xml.find("{%s}stanza-id" % NS_SID)
        emit("groupchat", room=msg["from"].bare, nick=msg["from"].resource, body=msg["body"],
             delayed=delay is not None,
             delay_from=delay.get("from") if delay is not None else None,
             stanza_id=sid.get("id") if sid is not None else None,
             stanza_id_by=sid.get("by") if sid is not None else None)
        self.bodies.append(msg["body"])
        if sid is not None:
            self.sids[msg["body"]] = sid.get("id")
        self.count("groupchat")

    def on_moderated(self, msg):
        emit("moderated", room=msg["from"].bare, id=msg["apply_to"]["id"],
             by=msg["apply_to"]["moderated"]["by"],
             reason=msg["apply_to"]["moderated"]["reason"])
        self.count("moderated")

    def on_subject(self, msg):
        emit("subject", room=msg["from"].bare, nick=msg["from"].resource, subject=msg["subject"])
        self.count("subject")

    def on_presence(self, pres):
        item = pres.xml.find("{%s}x/{%s}item" % (NS_USER, NS_USER))
        emit("muc_presence", room=pres["from"].bare, nick=pres["from"].resource,
             type=pres["type"], codes=codes_of(pres),
             role=item.get("role") if item is not None else None,
             affiliation=item.get("affiliation") if item is not None else None,
             jid=item.get("jid") if item is not None else None,
             new_nick=item.get("nick") if item is not None else None,
             destroyed=pres.xml.find("{%s}x/{%s}destroy" % (NS_USER, NS_USER)) is not None)
        self.count("muc_presence")
        if pres["type"] == "unavailable" and 110 in codes_of(pres):
            self.count("removed")

    def on_invite(self, msg):
        inv = msg.xml.find("{%s}x/{%s}invite" % (NS_USER, NS_USER))
        emit("invite", room=msg["from"].bare, inviter=inv.get("from") if inv is not None else None)
        self.count("invite")

    def on_message_error(self, msg):
        emit("message_error", frm=str(msg["from"]), condition=msg["error"]["condition"])
        self.count("message_error")

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"] and msg["from"].resource \
                and msg.xml.find("{%s}x" % NS_USER) is not None:
            emit("private", frm=str(msg["from"]), body=msg["body"])
            self.count("private")

    async def wait_until(self, pred, what):
        for _ in range(int(self.args.timeout * 10)):
            if pred():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("timed out waiting for " + what)

    async def on_session_start(self, _event):
        try:
            self.send_presence()
            for step in json.loads(self.args.steps):
                await self.run_step(step)
            self.finish(0)
        except (IqError, PresenceError) as e:
            emit("error", reason="unexpected error reply", condition=e.iq["error"]["condition"]
                 if isinstance(e, IqError) else e.presence["error"]["condition"])
            self.finish(1)
        except Exception as e:  # noqa: BLE001 - reported as an event
            emit("error", reason=repr(e))
            self.finish(1)

    async def run_step(self, s):
        muc = self.plugin["xep_0045"]
        do = s["do"]
        room = slixmpp.JID(s["room"]) if "room" in s else None
        if do == "join":
            try:
                pres, subject, occupants, history = await muc.join_muc_wait(
                    room, s["nick"], password=s.get("password"),
                    maxstanzas=s.get("maxstanzas"), timeout=self.args.timeout)
            except PresenceError as e:
                emit("join_error", room=str(room), condition=e.presence["error"]["condition"])
                return
            emit("joined", room=str(room), nick=pres["from"].resource, codes=codes_of(pres),
                 subject=subject["subject"], history=[m["body"] for m in history],
                 occupants=[p["from"].resource for p in occupants])
        elif do == "configure":
            form = await muc.get_room_config(room)
            for var, value in s.get("fields", {}).items():
                if var in form["fields"]:
                    form["fields"][var]["value"] = value
                else:
                    form.add_field(var=var, value=value)
            form["type"] = "submit"
            await muc.set_room_config(room, form)
            emit("configured", room=str(room))
        elif do == "instant":
            form = self.plugin["xep_0004"].make_form(ftype="submit")
            await muc.set_room_config(room, form)
            emit("configured", room=str(room))
        elif do == "say":
            self.send_message(mto=room, mbody=s["body"], mtype="groupchat")
        elif do == "subject":
            muc.set_subject(room, s["subject"])
        elif do == "pm":
            m = self.make_message(mto="%s/%s" % (room, s["nick"]), mbody=s["body"], mtype="chat")
            m.xml.append(slixmpp.xmlstream.ET.Element("{%s}x" % NS_USER))
            m.send()
        elif do == "wait_body":
            await self.wait_until(lambda: s["body"] in self.bodies, "body " + s["body"])
        elif do == "wait_event":
            n = s.get("count", 1)
            await self.wait_until(lambda: self.counts.get(s["name"], 0) >= n, s["name"])
        elif do in ("role", "affiliation"):
            try:
                if do == "role":
                    await muc.set_role(room, s["nick"], s["role"], reason=s.get("reason", ""))
                else:
                    await muc.set_affiliation(room, s["affiliation"], jid=slixmpp.JID(s["jid"]),
                                              reason=s.get("reason", ""))
                emit("admin_ok", what=do)
            except IqError as e:
                emit("admin_error", what=do, condition=e.iq["error"]["condition"])
        elif do == "destroy":
            try:
                await muc.destroy(room, reason=s.get("reason", ""))
                emit("destroyed", room=str(room))
            except IqError as e:
                emit("admin_error", what=do, condition=e.iq["error"]["condition"])
        elif do == "invite":
            muc.invite(room, slixmpp.JID(s["jid"]), reason=s.get("reason", ""))
        elif do == "bookmarks":
            # XEP-0048 through private storage (XEP-0049), slixmpp's xep_0048 plugin.
            iq = await self.plugin["xep_0048"].get_bookmarks(method="xep_0049")
            emit("bookmarks", conferences=[
                {"jid": str(c["jid"]), "name": c["name"], "autojoin": bool(c["autojoin"]),
                 "nick": c["nick"]}
                for c in iq["private"]["bookmarks"]["conferences"]])
        elif do == "disco_items":
            r = await self.plugin["xep_0030"].get_items(jid=s["to"])
            emit("disco_items", items=[i[0] for i in r["disco_items"]["items"]])
        elif do == "disco_info":
            try:
                r = await self.plugin["xep_0030"].get_info(jid=s["to"])
                emit("disco_info", features=sorted(r["disco_info"]["features"]),
                     identities=[list(i) for i in r["disco_info"]["identities"]])
            except IqError as e:
                emit("disco_error", condition=e.iq["error"]["condition"])
        elif do == "mam":
            bodies, ids, pages = [], [], 0
            it = self["xep_0313"].retrieve(jid=room, iterator=True, rsm={"max": s.get("max", 10)})
            async for page in it:
                pages += 1
                for msg in page["mam"]["results"]:
                    fwd = msg["mam_result"]["forwarded"]
                    bodies.append(fwd["stanza"]["body"])
                    ids.append(msg["mam_result"]["id"])
            emit("mam", bodies=bodies, ids=ids, pages=pages)
        elif do == "moderate":
            try:
                await self["xep_0425"].moderate(room, self.sids[s["body"]], s.get("reason", ""))
                emit("moderate_ok")
            except IqError as e:
                emit("moderate_error", condition=e.iq["error"]["condition"])
        elif do == "leave":
            muc.leave_muc(room, s["nick"])
        elif do == "ready":
            emit("ready")
        elif do == "sleep":
            await asyncio.sleep(s["s"])
        else:
            raise RuntimeError("unknown step " + do)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5222)
    p.add_argument("--tls", default="starttls")
    p.add_argument("--cafile")
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--mech", default="SCRAM-SHA-256")
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--steps", required=True)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.ERROR, stream=sys.stderr)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = Client(args)
    client.result = loop.create_future()
    client.ca_certs = args.cafile
    if hasattr(client, "enable_direct_tls"):
        client.enable_direct_tls = False
        client.enable_starttls = True
        client.enable_plaintext = False
        client.connect(args.host, args.port)
    else:
        client.connect((args.host, args.port), use_ssl=False, force_starttls=True)
    try:
        status = loop.run_until_complete(asyncio.wait_for(client.result, args.timeout + 5))
    except asyncio.TimeoutError:
        emit("timeout")
        status = 3
    try:
        loop.run_until_complete(asyncio.wait_for(client.disconnect(wait=1.0), 3.0))
    except Exception:  # noqa: BLE001
        pass
    emit("exit", status=status)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
