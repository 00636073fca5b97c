#!/usr/bin/python3
"""A real MQTT client (paho-mqtt, Debian's python3-paho-mqtt 1.6) for hearth's MQTT tests.

Connects (plain or TLS, MQTT 3.1.1 or 5), optionally with a last will, subscribes to
each --subscribe filter, publishes each --publish TOPIC=PAYLOAD in order (waiting for its
acknowledgement at QoS 1 and 2), then ends as --end says: "disconnect" (a clean
DISCONNECT) or "drop" (the process exits with the socket open and no DISCONNECT, as a
device losing power does, so the server applies the will). Every line on stdout is one
JSON object with an "event" key.

Exit status: 0 done, 1 failed (refused, error), 3 timed out.
"""

import argparse
import json
import os
import ssl
import sys
import threading
import time

try:
    import paho.mqtt.client as mqtt
except ImportError:  # pragma: no cover
    print(json.dumps({"event": "error", "reason": "paho-mqtt is not installed"}), flush=True)
    sys.exit(1)


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--insecure", action="store_true", help="no host name check")
    p.add_argument("--v5", action="store_true")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--client-id", default="")
    p.add_argument("--keepalive", type=int, default=60)
    p.add_argument("--will", metavar="TOPIC=PAYLOAD")
    p.add_argument("--subscribe", action="append", default=[])
    p.add_argument("--publish", action="append", default=[], metavar="TOPIC=PAYLOAD")
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--retain", action="store_true")
    p.add_argument("--gap", type=float, default=0.0, help="seconds between publishes")
    p.add_argument("--end", choices=["disconnect", "drop"], default="disconnect")
    p.add_argument("--linger", type=float, default=0.0, help="seconds before the end")
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args(argv)

    protocol = mqtt.MQTTv5 if args.v5 else mqtt.MQTTv311
    if args.v5:
        client = mqtt.Client(client_id=args.client_id, protocol=protocol)
    else:
        client = mqtt.Client(client_id=args.client_id, clean_session=True, protocol=protocol)
    client.username_pw_set(args.user, args.password)
    if args.will:
        topic, _, payload = args.will.partition("=")
        client.will_set(topic, payload, qos=1, retain=True)
    if args.tls:
        client.tls_set(ca_certs=args.cafile, cert_reqs=ssl.CERT_REQUIRED if args.cafile
                       else ssl.CERT_NONE)
        if args.insecure or not args.cafile:
            client.tls_insecure_set(True)

    connected = threading.Event()
    subscribed = threading.Event()
    result = {"rc": None}

    def on_connect(_c, _u, _flags, rc, _props=None):
        code = rc.value if hasattr(rc, "value") else rc
        result["rc"] = code
        emit("connack", rc=code)
        connected.set()

    def on_subscribe(_c, _u, mid, granted, _props=None):
        codes = [g.value if hasattr(g, "value") else g for g in granted]
        emit("suback", mid=mid, granted=codes)
        subscribed.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    try:
        if args.v5:
            client.connect(args.host, args.port, keepalive=args.keepalive, clean_start=True)
        else:
            client.connect(args.host, args.port, keepalive=args.keepalive)
    except Exception as e:  # noqa: BLE001 - reported as an event
        emit("error", reason=str(e))
        return 1
    client.loop_start()
    if not connected.wait(args.timeout):
        emit("timeout", waiting="connack")
        return 3
    if result["rc"] != 0:
        client.loop_stop()
        return 1
    for f in args.subscribe:
        subscribed.clear()
        client.subscribe(f, qos=1)
        if not subscribed.wait(args.timeout):
            emit("timeout", waiting="suback")
            return 3
    for spec in args.publish:
        topic, _, payload = spec.partition("=")
        info = client.publish(topic, payload, qos=args.qos, retain=args.retain)
        if args.qos > 0:
            info.wait_for_publish(args.timeout)
            if not info.is_published():
                emit("timeout", waiting="puback", topic=topic)
                return 3
        emit("published", topic=topic, mid=info.mid)
        if args.gap:
            time.sleep(args.gap)
    time.sleep(args.linger)
    if args.end == "drop":
        emit("dropped")
        # No DISCONNECT: the socket closes with the process.
        os._exit(0)
    client.disconnect()
    client.loop_stop()
    emit("disconnected")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
