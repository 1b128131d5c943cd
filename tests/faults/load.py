#!/usr/bin/env python3
"""Load for the fault suite: clients that create, claim, accept and finish tasks through the sidecar
(REST) and directly through SQL, each as its own agent, until a stop file appears or a deadline passes.

Every change a client sees acknowledged (a 2xx answer, or a committed SQL call, carrying the task id and
its new status) is appended to the client's log as one CSV line:
    client,via,op,task_id,external_id,agent,status,epoch_ms
Failures (refused connections, 5xx, SQL errors while the server restarts) are counted, never logged as
changes, and the client carries on. A summary line per client goes to <log dir>/summary-<client>.json.
"""
import argparse
import http.client
import json
import os
import random
import time
import threading
import urllib.parse

import psycopg2

RESERVE_SECONDS = 5
REQUEST_TIMEOUT_S = 15


class Client:
    def __init__(self, name, via, args):
        self.name = name
        self.via = via
        self.args = args
        self.agent = "agent-" + name
        self.seq = 0
        self.held = []  # tasks this client's agent holds (reserved or accepted)
        self.stats = {"acks": 0, "errors": 0, "codes": {}}
        self.log = os.open(os.path.join(args.log_dir, "ack-%s.csv" % name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.http = None
        self.db = None
        self.rng = random.Random(name)
        self.unavailable = False  # the last failure was the server's (unreachable, 5xx, connection), not a refusal

    # --- transport ---------------------------------------------------------------------------------
    def rest(self, method, path, body=None):
        """Returns (status, document) or (None, None) when the sidecar could not be reached."""
        u = urllib.parse.urlsplit(self.args.base)
        try:
            if self.http is None:
                self.http = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_TIMEOUT_S)
            headers = {"x-api-key": self.args.key}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["content-type"] = "application/json"
            self.http.request(method, u.path + path, body=data, headers=headers)
            r = self.http.getresponse()
            raw = r.read()
            code = str(r.status)
            self.stats["codes"][code] = self.stats["codes"].get(code, 0) + 1
            doc = json.loads(raw) if raw else None
            return r.status, doc
        except (OSError, http.client.HTTPException, ValueError):
            self.stats["codes"]["unreachable"] = self.stats["codes"].get("unreachable", 0) + 1
            if self.http is not None:
                self.http.close()
            self.http = None
            return None, None

    def call(self, query, params):
        """One SQL call in its own transaction: the jsonb it returns, or raises on any failure."""
        try:
            if self.db is None or self.db.closed:
                self.db = psycopg2.connect(self.args.dsn, connect_timeout=5, application_name="iwd-fault-load")
                self.db.autocommit = True
            with self.db.cursor() as cur:
                cur.execute("SET statement_timeout = '%ds'" % REQUEST_TIMEOUT_S)
                cur.execute(query, params)
                row = cur.fetchone()
            self.stats["codes"]["sql ok"] = self.stats["codes"].get("sql ok", 0) + 1
            return row[0] if row else None
        except psycopg2.Error as e:
            key = "sql " + (e.pgcode or "connection")
            self.stats["codes"][key] = self.stats["codes"].get(key, 0) + 1
            if self.db is not None and (self.db.closed or e.pgcode is None):
                try:
                    self.db.close()
                except psycopg2.Error:
                    pass
                self.db = None
            raise

    def ack(self, op, task, status):
        line = "%s,%s,%s,%s,%s,%s,%s,%d\n" % (self.name, self.via, op, task["id"], task.get("externalId") or "",
                                            self.agent, status, int(time.time() * 1000))
        os.write(self.log, line.encode())
        self.stats["acks"] += 1

    def pause(self):
        self.stats["errors"] += 1
        time.sleep(self.rng.uniform(0.05, 0.3))

    # --- operations: each returns the task document on an acknowledged change, else None ----------
    def op(self, verb, path_or_sql, body=None, params=None, ok=(200, 201)):
        self.unavailable = False
        if self.via == "rest":
            code, doc = self.rest(verb, path_or_sql, body)
            if code in ok and isinstance(doc, dict) and "id" in doc:
                return doc
            if code == 204:
                return None
            self.unavailable = code is None or code >= 500
            self.pause()
            return None
        try:
            return self.call(path_or_sql, params)
        except psycopg2.Error as e:
            self.unavailable = e.pgcode is None or e.pgcode[:2] in ("08", "57", "53")
            self.pause()
            return None

    def setup(self):
        agent = {"id": self.agent, "name": self.agent, "state": "ready", "capacity": {"workitem": 3}}
        while not self.stopped():
            if self.via == "rest":
                code, _ = self.rest("PUT", "/agents/" + self.agent, {k: v for k, v in agent.items() if k != "id"})
                if code == 200:
                    code, _ = self.rest("POST", "/agents/%s/state" % self.agent, {"state": "ready"})
                    if code == 200:
                        return
            else:
                try:
                    self.call("SELECT iwd.upsert_agent(%s::jsonb)", (json.dumps(agent),))
                    return
                except psycopg2.Error:
                    pass
            time.sleep(0.2)

    def create(self):
        self.seq += 1
        task = {"externalId": "%s-%d" % (self.name, self.seq), "capturePoint": "fault",
                "subject": "fault load %s %d" % (self.name, self.seq), "priority": self.rng.randint(1, 90)}
        doc = self.op("POST", "/tasks", task, None) if self.via == "rest" else \
            self.op(None, "SELECT iwd.create_task(%s::jsonb)", params=(json.dumps(task),))
        if doc:
            self.ack("created", doc, doc["status"])
        else:
            self.seq -= 1  # the same externalId again: creation is idempotent
        return doc

    def claim(self):
        doc = self.op("POST", "/agents/%s/next" % self.agent, {"reserveSeconds": RESERVE_SECONDS}) \
            if self.via == "rest" else \
            self.op(None, "SELECT iwd.next_task(%s, %s)", params=(self.agent, RESERVE_SECONDS))
        if doc:
            self.ack("reserved", doc, doc["status"])
            self.held.append(doc)
        return doc

    def lifecycle(self, task, verb, sql, params, body):
        doc = self.op("POST", "/tasks/%s/%s" % (task["id"], verb), body) if self.via == "rest" else \
            self.op(None, sql, params=params)
        return doc

    def accept(self, task):
        doc = self.lifecycle(task, "accept", "SELECT iwd.accept_task(%s, %s)", (task["id"], self.agent),
                             {"agent": self.agent})
        if doc:
            self.ack("accepted", doc, doc["status"])
        return doc

    def finish(self, task):
        r = self.rng.random()
        if r < 0.85:
            doc = self.lifecycle(task, "complete", "SELECT iwd.complete_task(%s, %s)", (task["id"], self.agent),
                                 {"agent": self.agent})
            op = "completed"
        elif r < 0.95:
            doc = self.lifecycle(task, "reject", "SELECT iwd.reject_task(%s, %s, 'fault load')",
                                 (task["id"], self.agent), {"agent": self.agent, "reason": "fault load"})
            op = "rejected"
        else:
            doc = self.lifecycle(task, "cancel", "SELECT iwd.cancel_task(%s, 'fault load')", (task["id"],),
                                 {"reason": "fault load"})
            op = "canceled"
        if doc:
            self.ack(op, doc, doc["status"])
        return doc

    def stopped(self):
        return os.path.exists(self.args.stop_file) or time.time() > self.args.deadline

    def run(self):
        self.setup()
        while not self.stopped():
            self.create()
            if self.stopped():
                break
            self.claim()
            # work on what the agent holds: a task the server could not act on (it was restarting) is
            # tried again later, so that it does not hold the agent's capacity for ever; one refused
            # (its reservation timed out meanwhile) is dropped
            for task in list(self.held):
                if self.stopped():
                    break
                self.held.remove(task)
                if task.get("acceptedAt") is None:
                    accepted = self.accept(task)
                    if not accepted:
                        if self.unavailable:
                            self.held.append(task)
                        continue
                    task = accepted
                if not self.finish(task) and self.unavailable:
                    self.held.append(task)
        with open(os.path.join(self.args.log_dir, "summary-%s.json" % self.name), "w") as f:
            json.dump(self.stats, f)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--rest-clients", type=int, default=12)
    p.add_argument("--sql-clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--stop-file", required=True)
    args = p.parse_args()
    args.deadline = time.time() + args.seconds
    clients = [Client("r%02d" % i, "rest", args) for i in range(args.rest_clients)] + \
              [Client("s%02d" % i, "sql", args) for i in range(args.sql_clients)]
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
