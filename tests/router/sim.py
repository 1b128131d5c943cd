#!/usr/bin/env python3
"""A router simulator that speaks the router protocol (README, Router protocol; sidecar/openapi.yaml, tag
"router protocol"), for the router suite and benchmark.

    sim.py --port N --state FILE [--client-id ID --client-secret S --api-key K]

Protocol: POST /oauth/token (client credentials, HTTP Basic), then with "Authorization: Bearer" and
"x-api-key": POST /workitems (Idempotency-Key header: the same key answers the same id), GET
/workitems/{id}, DELETE /workitems/{id} (stop; 409 once the item is completed), GET
/workitems?changedSince=CURSOR&limit=N (the journal of changes after CURSOR, each with the work item's
version).

Agents (--agents, default 5) take queued work items in priority order, one at a time each: offered, then
accepted, then completed, a step (--step-seconds) apart; --mode offer|accept|complete|none stops them
after that step (none: nothing is offered).

Switches (POST /sim/config with a JSON object; no authentication): mode, agents, stepSeconds, fail5xx (the
next N protocol requests answer 503; -1: all of them until set to 0), slowSeconds (each protocol request waits
that long first), jitterSeconds (each submission waits a random time up to that long before it is received:
submissions sent side by side arrive out of order), alwaysGone (every pull answers 410, as a router that keeps
losing its journal), clientId, clientSecret, apiKey, tokenTtl (seconds). POST /sim/expire-tokens invalidates
every token issued. POST /sim/items/{id} {"state", "agent", "forgetJournal"} changes a work item as the router
would (e.g. rejected, stopped); with "forgetJournal": true the journal is then forgotten, as by a router that
lost it: a pull from a cursor before that answers 410 with the current cursor. GET /sim/state: the work items
(with "arrival", the order they were received in) and counters (posts, duplicate posts, token requests, stops,
requests refused, retrieves, pulls answered 410). The state is saved to --state (on every change, at most
every 0.2 s, and on SIGTERM) and read at start: a restarted simulator is the same router.
"""
import argparse
import base64
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.RLock()
state = {
    "items": {},          # id -> {id, key, taskId, task, state, agent, version, priority, seq}
    "keys": {},           # idempotency key -> id
    "journal": [],        # [seq, id, state, agent, version, changedAt]
    "seq": 0,
    "horizon": 0,         # the journal before it is forgotten: a pull from an older cursor answers 410
    "next_id": 0,
    "counters": {"posts": 0, "duplicatePosts": 0, "tokens": 0, "tokensRefused": 0, "stops": 0,
                 "refused5xx": 0, "unauthorized": 0, "pulls": 0, "gone": 0, "retrieves": 0},
}
config = {"mode": "complete", "agents": 5, "stepSeconds": 0.2, "fail5xx": 0, "slowSeconds": 0, "jitterSeconds": 0,
          "alwaysGone": False,
          "clientId": "router-client", "clientSecret": "router-secret", "apiKey": None, "tokenTtl": 3600}
tokens = {}               # token -> expiry (unix time); in memory: a restart invalidates them
dirty = threading.Event()
args = None


def now_iso():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def change(item, new_state, agent=None):
    """Record a change of a work item (lock held)."""
    item["state"] = new_state
    item["agent"] = agent
    item["version"] += 1
    item["changedAt"] = now_iso()
    item["since"] = time.time()
    state["seq"] += 1
    state["journal"].append([state["seq"], item["id"], new_state, agent, item["version"], item["changedAt"]])
    dirty.set()


def save():
    with lock:
        text = json.dumps({"state": state, "config": config})
    tmp = args.state + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.state)


def saver():
    while True:
        dirty.wait()
        time.sleep(0.2)
        dirty.clear()
        save()


def agents_loop():
    """The agents: each takes the best queued item, then offers, accepts, completes it a step apart."""
    busy = {}  # agent -> item id
    while True:
        time.sleep(0.02)
        with lock:
            step = float(config["stepSeconds"])
            mode = config["mode"]
            names = ["agent-%d" % i for i in range(1, int(config["agents"]) + 1)]
            now = time.time()
            for agent, item_id in list(busy.items()):
                item = state["items"].get(item_id)
                if item is None or item["agent"] != agent or item["state"] not in ("offered", "accepted"):
                    del busy[agent]
                    continue
                if now - item["since"] < step:
                    continue
                if item["state"] == "offered" and mode in ("accept", "complete"):
                    change(item, "accepted", agent)
                elif item["state"] == "accepted" and mode == "complete":
                    change(item, "completed", agent)
                    del busy[agent]
            for item in state["items"].values():
                if item["state"] in ("offered", "accepted") and item["agent"] in names:
                    busy.setdefault(item["agent"], item["id"])
            if mode == "none":
                continue
            free = [a for a in names if a not in busy]
            if not free:
                continue
            queued = sorted((i for i in state["items"].values() if i["state"] == "queued"),
                            key=lambda i: (-i["priority"], i["seq"]))
            for agent, item in zip(free, queued):
                change(item, "offered", agent)
                busy[agent] = item["id"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # an answer leaves in one write with Nagle off, as from an HTTP server of production: written in two
    # (the headers, then the body) it waits for the delayed ACK of the first, 40 ms a request on a kept-alive
    # connection
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, fmt, *a):
        if os.environ.get("SIM_LOG"):
            sys.stderr.write("sim: " + fmt % a + "\n")

    def answer(self, status, doc=None):
        body = b"" if doc is None else json.dumps(doc).encode()
        self.send_response(status)
        if doc is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def route(self, method):
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = urllib.parse.parse_qs(url.query)
        if parts and parts[0] == "sim":
            return self.control(method, parts[1:])
        if parts == ["oauth", "token"] and method == "POST":
            return self.token()
        if parts and parts[0] == "workitems":
            return self.workitems(method, parts[1:], query)
        return self.answer(404, {"error": "no such route"})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    # --- the protocol ---------------------------------------------------------------------------------
    def token(self):
        form = urllib.parse.parse_qs(self.body().decode())
        auth = self.headers.get("Authorization", "")
        with lock:
            state["counters"]["tokens"] += 1
            expected = "Basic " + base64.b64encode(
                ("%s:%s" % (config["clientId"], config["clientSecret"])).encode()).decode()
            if form.get("grant_type") != ["client_credentials"]:
                return self.answer(400, {"error": "unsupported_grant_type"})
            if auth != expected:
                state["counters"]["tokensRefused"] += 1
                return self.answer(401, {"error": "invalid_client"})
            token = uuid.uuid4().hex
            ttl = int(config["tokenTtl"])
            tokens[token] = time.time() + ttl
        return self.answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with lock:
            ok = token in tokens and tokens[token] > time.time()
            if config["apiKey"] and self.headers.get("x-api-key") != config["apiKey"]:
                ok = False
            if not ok:
                state["counters"]["unauthorized"] += 1
        return ok

    def workitems(self, method, rest, query):
        with lock:
            slow = float(config["slowSeconds"])
        if slow > 0:
            time.sleep(slow)
        with lock:
            if config["fail5xx"] != 0:
                if config["fail5xx"] > 0:
                    config["fail5xx"] -= 1
                state["counters"]["refused5xx"] += 1
                self.body()
                return self.answer(503, {"error": "the router is unavailable"})
        if not self.authorized():
            self.body()
            return self.answer(401, {"error": "invalid_token"})
        if method == "POST" and not rest:
            return self.submit()
        if method == "GET" and not rest:
            return self.changes(query)
        if len(rest) == 1 and method in ("GET", "DELETE"):
            with lock:
                item = state["items"].get(rest[0])
                if item is None:
                    return self.answer(404, {"error": "no such work item"})
                if method == "GET":
                    state["counters"]["retrieves"] = state["counters"].get("retrieves", 0) + 1
                if method == "DELETE":
                    if item["state"] == "completed":
                        return self.answer(409, {"error": "the work item is completed", "state": "completed"})
                    state["counters"]["stops"] += 1
                    if item["state"] != "stopped":
                        change(item, "stopped", item["agent"])
                return self.answer(200, self.view(item))
        return self.answer(405, {"error": "method not allowed"})

    @staticmethod
    def view(item):
        return {"id": item["id"], "taskId": item["taskId"], "state": item["state"], "agent": item["agent"],
                "version": item["version"]}

    @staticmethod
    def sim_view(item):
        """The view with what only the switches tell: arrival, the order the submissions were received in."""
        return dict(Handler.view(item), arrival=item["seq"])

    def submit(self):
        key = self.headers.get("Idempotency-Key")
        try:
            task = json.loads(self.body() or b"null")
        except ValueError:
            return self.answer(400, {"error": "the body is not JSON"})
        if not key or not isinstance(task, dict) or "id" not in task:
            return self.answer(400, {"error": "a task document and an Idempotency-Key are required"})
        with lock:
            jitter = float(config["jitterSeconds"])
        if jitter > 0:  # submissions sent side by side are received in any order
            time.sleep(random.uniform(0, jitter))
        with lock:
            state["counters"]["posts"] += 1
            if key in state["keys"]:
                state["counters"]["duplicatePosts"] += 1
                return self.answer(200, {"id": state["keys"][key]})
            state["next_id"] += 1
            item_id = "wi-%d" % state["next_id"]
            item = {"id": item_id, "key": key, "taskId": task["id"], "priority": int(task.get("priority") or 0),
                    "seq": state["next_id"], "state": None, "agent": None, "version": 0}
            state["items"][item_id] = item
            state["keys"][key] = item_id
            change(item, "queued")
        return self.answer(201, {"id": item_id})

    def changes(self, query):
        try:
            since = int((query.get("changedSince") or ["0"])[0] or 0)
            limit = min(int((query.get("limit") or ["500"])[0]), 1000)
        except ValueError:
            return self.answer(400, {"error": "changedSince and limit are integers"})
        with lock:
            state["counters"]["pulls"] += 1
            if since < state.get("horizon", 0) or config.get("alwaysGone"):
                state["counters"]["gone"] = state["counters"].get("gone", 0) + 1
                return self.answer(410, {"error": "the cursor is no longer known", "cursor": str(state["seq"])})
            journal = state["journal"]
            lo, hi = 0, len(journal)  # the first entry after since (seq increases)
            while lo < hi:
                mid = (lo + hi) // 2
                if journal[mid][0] <= since:
                    lo = mid + 1
                else:
                    hi = mid
            page = journal[lo:lo + limit]
            out = [{"id": e[1], "taskId": state["items"][e[1]]["taskId"], "state": e[2], "agent": e[3],
                    "version": e[4], "changedAt": e[5]} for e in page]
            cursor = page[-1][0] if page else since
            more = lo + limit < len(journal)
        return self.answer(200, {"changes": out, "cursor": str(cursor), "more": more})

    # --- the switches ---------------------------------------------------------------------------------
    def control(self, method, rest):
        if method == "GET" and rest == ["state"]:
            with lock:
                items = {k: self.sim_view(v) for k, v in state["items"].items()}
                doc = {"items": items, "counters": dict(state["counters"]), "config": dict(config),
                       "byState": {}}
                for v in items.values():
                    doc["byState"][v["state"]] = doc["byState"].get(v["state"], 0) + 1
                doc["keys"] = len(state["keys"])
                doc["seq"], doc["horizon"] = state["seq"], state.get("horizon", 0)
            return self.answer(200, doc)
        if method == "POST" and rest == ["config"]:
            patch = json.loads(self.body() or b"{}")
            with lock:
                unknown = [k for k in patch if k not in config]
                if unknown:
                    return self.answer(400, {"error": "unknown switch %s" % unknown[0]})
                config.update(patch)
                dirty.set()
                return self.answer(200, dict(config))
        if method == "POST" and rest == ["expire-tokens"]:
            self.body()
            with lock:
                tokens.clear()
            return self.answer(200, {"expired": True})
        if method == "POST" and len(rest) == 2 and rest[0] == "items":
            patch = json.loads(self.body() or b"{}")
            with lock:
                item = state["items"].get(rest[1])
                if item is None:
                    return self.answer(404, {"error": "no such work item"})
                change(item, patch["state"], patch.get("agent", item["agent"]))
                if patch.get("forgetJournal"):  # the router loses its journal: older cursors are gone
                    state["journal"] = []
                    state["horizon"] = state["seq"]
                return self.answer(200, self.view(item))
        return self.answer(404, {"error": "no such switch"})


def main():
    global args
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret")
    parser.add_argument("--api-key")
    parser.add_argument("--agents", type=int)
    parser.add_argument("--mode", choices=["offer", "accept", "complete", "none"])
    parser.add_argument("--step-seconds", type=float)
    args = parser.parse_args()
    if os.path.exists(args.state):
        with open(args.state) as f:
            saved = json.load(f)
        state.update(saved["state"])
        config.update(saved["config"])
    for name, key in (("client_id", "clientId"), ("client_secret", "clientSecret"), ("api_key", "apiKey"),
                      ("agents", "agents"), ("mode", "mode"), ("step_seconds", "stepSeconds")):
        if getattr(args, name) is not None:
            config[key] = getattr(args, name)

    def stop(*_):
        save()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=saver, daemon=True).start()
    threading.Thread(target=agents_loop, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    save()
    server.serve_forever()


if __name__ == "__main__":
    main()
