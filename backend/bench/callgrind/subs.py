"""Idle subscriptions for insert.sh: `subs.py PORT SOCKETS READY_FILE`.

Opens SOCKETS WebSockets of 100 subscriptions each (users u1.., ten sockets per user,
`SELECT * FROM bench.chat WHERE room = i`), waits for every initial_data, creates
READY_FILE, then keeps the sockets open (pinging them) until killed.
Needs `pip install websocket-client`.
"""
import base64
import json
import sys
import time

import websocket

port, sockets, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
open_sockets = []
for s in range(sockets):
    credentials = base64.b64encode(f"u{1 + s // 10}:pw".encode()).decode()
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/ws", header=[f"Authorization: Basic {credentials}"], timeout=600
    )
    for i in range(100):
        subscribe = {"type": "subscribe", "id": f"s{i}", "sql": f"SELECT * FROM bench.chat WHERE room = {i}"}
        ws.send(json.dumps(subscribe))
    loaded = 0
    while loaded < 100:
        message = json.loads(ws.recv())
        if message["type"] == "initial_data" and message["has_more"] is False:
            loaded += 1
        elif message["type"] == "error":
            raise SystemExit(message)
    open_sockets.append(ws)
open(ready, "w").close()
while True:
    for ws in open_sockets:
        ws.ping()
    time.sleep(20)
