#!/usr/bin/python3
"""The trickle of bench/density/busy.sh on kept connections: one connection per tenant database, opened
once, as a client that keeps its connections (a pool, the sidecar under its cap) would.

usage: trickle.py HOST PORT DATABASE...

Connects to every DATABASE (as the user of PGUSER), prints "ready", then reads commands on stdin:
  run SECONDS [RATE]
                a task a minute in each database (or RATE tasks a second, round robin), spread evenly, for
                SECONDS: each task is created, reserved for 10 s by agent a1 and left to time out (its
                deadline recorded in public.deadline), the two statements as psql runs them (autocommit);
                then prints "done TASKS CPU_SECONDS" (this process's CPU over the window)
  quit          closes the connections
"""
import resource
import sys
import time

import psycopg2

CREATE = "SELECT iwd.create_task(%s)"
RESERVE = "INSERT INTO public.deadline SELECT (iwd.next_task('a1', 10) ->> 'reservedUntil')::timestamptz"


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(conns, names, seconds, state, rate=None):
    gap = 1.0 / rate if rate else 60.0 / len(conns)
    start = time.monotonic()
    cpu = cpu_seconds()
    sent = 0
    while True:
        due = start + sent * gap
        if due >= start + seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i = state["next"]
        state["next"] = (i + 1) % len(conns)
        with conns[i].cursor() as cur:
            external = '{"externalId": "P%s-%d", "capturePoint": "bench"}' % (names[i], time.time_ns())
            cur.execute(CREATE, (external,))
            cur.execute(RESERVE)
        sent += 1
    return sent, cpu_seconds() - cpu


def main():
    host, port, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    conns = []
    for name in names:
        conn = psycopg2.connect(host=host, port=port, dbname=name, application_name="iwd-bench-trickle")
        conn.autocommit = True
        conns.append(conn)
    print("ready", flush=True)
    state = {"next": 0}
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["run"]:
            rate = float(words[2]) if len(words) > 2 else None
            sent, cpu = run(conns, names, float(words[1]), state, rate)
            print("done %d %.2f" % (sent, cpu), flush=True)
        elif words[:1] == ["quit"]:
            break
    for conn in conns:
        conn.close()


if __name__ == "__main__":
    main()
