#!/usr/bin/env python3
"""XEP-0045 group chat with aioxmpp 0.13's own MUC client (aioxmpp.muc.MUCClient).

  --as-owner   join --room as --nick (which creates it), fill aioxmpp's
               ConfigurationForm (a persistent room named "aioxmpp room"), set the topic,
               send "hello from aioxmpp", print "ready", wait for a message --expect from
               the guest, kick the guest (--kick NICK) and print "kicked" once the room
               says the guest left kicked
  (default)    join --room as --nick asking for 10 messages of history, print "joined"
               with the history bodies and the topic, send --say, then wait until the
               room tells us we were kicked: print "exit" with the leave mode

Every stdout line is one JSON object with an "event" key. The certificate is not
verified (`no_verify`): what is tested is the MUC protocol, not TLS.
"""

import argparse
import asyncio
import json
import logging
import sys

try:
    import aioxmpp
    import aioxmpp.muc
    import aioxmpp.muc.xso
except ImportError as e:
    print(json.dumps({"event": "error", "reason": f"aioxmpp is not importable: {e}"}), flush=True)
    sys.exit(2)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True, default=str), flush=True)


async def main(args):
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(args.jid),
        aioxmpp.make_security_layer(args.password, no_verify=True),
        override_peer=[(args.host, args.port, aioxmpp.connector.STARTTLSConnector())],
    )
    muc = client.summon(aioxmpp.MUCClient)
    room_jid = aioxmpp.JID.fromstr(args.room)
    async with client.connected():
        bodies = []
        left = asyncio.get_event_loop().create_future()
        exited = asyncio.get_event_loop().create_future()
        if args.as_owner:
            room, fut = muc.join(room_jid, args.nick)
        else:
            room, fut = muc.join(room_jid, args.nick,
                                 history=aioxmpp.muc.xso.History(maxstanzas=10))

        def on_message(msg, member, source, **kwargs):
            body = msg.body.any() if msg.body else None
            if body:
                emit("message", body=body, nick=member.nick if member else None)
                bodies.append(body)

        def on_leave(member, *, muc_leave_mode=None, muc_status_codes=set(), **kwargs):
            emit("left", nick=member.nick, mode=str(muc_leave_mode),
                 codes=sorted(int(c) for c in muc_status_codes))
            if not left.done():
                left.set_result(muc_leave_mode)

        def on_exit(*, muc_leave_mode=None, muc_status_codes=set(), **kwargs):
            if not exited.done():
                exited.set_result((muc_leave_mode, muc_status_codes))

        room.on_message.connect(on_message)
        room.on_leave.connect(on_leave)
        room.on_exit.connect(on_exit)
        await asyncio.wait_for(fut, args.timeout)

        async def until(pred, what):
            for _ in range(int(args.timeout * 10)):
                if pred():
                    return
                await asyncio.sleep(0.1)
            raise RuntimeError("timed out waiting for " + what)

        if args.as_owner:
            form = aioxmpp.muc.ConfigurationForm.from_xso(await muc.get_room_config(room_jid))
            form.roomname.value = "aioxmpp room"
            form.persistentroom.value = True
            await muc.set_room_config(room_jid, form.render_reply())
            emit("configured")
            await room.set_topic({None: "set by aioxmpp"})
            msg = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, to=room_jid)
            msg.body[None] = "hello from aioxmpp"
            await room.send_message(msg)
            emit("ready")
            await until(lambda: args.expect in bodies, args.expect)
            guest = next(m for m in room.members if m.nick == args.kick)
            await room.kick(guest, "enough")
            mode = await asyncio.wait_for(left, args.timeout)
            emit("kicked", mode=str(mode))
        else:
            # History and the subject follow the self-presence that completes the join
            # (§7.2.15); the subject comes last.
            await until(lambda: bodies, "the history")
            await asyncio.sleep(0.3)
            emit("joined", history=list(bodies),
                 topic=room.muc_subject.any() if room.muc_subject else None,
                 setter=room.muc_subject_setter)
            msg = aioxmpp.Message(type_=aioxmpp.MessageType.GROUPCHAT, to=room_jid)
            msg.body[None] = args.say
            await room.send_message(msg)
            mode, codes = await asyncio.wait_for(exited, args.timeout)
            emit("exit_room", mode=str(mode), codes=sorted(int(c) for c in codes))
    emit("done")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--room", required=True)
    p.add_argument("--nick", required=True)
    p.add_argument("--as-owner", action="store_true")
    p.add_argument("--expect", default="")
    p.add_argument("--kick", default="")
    p.add_argument("--say", default="")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if a.debug else logging.ERROR, stream=sys.stderr)
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(a), a.timeout + 10)))
    except Exception as e:  # noqa: BLE001 - reported as an event
        emit("error", reason=repr(e))
        sys.exit(1)
