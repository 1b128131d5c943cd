#!/usr/bin/env python3
"""A webhook receiver for the tests and the benchmark: records every request it gets, one JSON object a line.

usage: receiver.py LOG PORT [TLS_PORT CERT KEY]

POST /r/<mode>/<name> answers according to <mode>:
  ok         200 at once
  fail1      500 to the first attempt of each delivery id, 200 to the next ones
  always500  500 to every attempt
  hang       answers after 30 s (the sidecar gives up after 10 s)
  hold       answers 200 after 3 s
  brief      answers 200 after 0.3 s
  redirect   302 to /r/ok/<name>-redirected
  bench      200 at once, logging only the time, the delivery id and the event's time (bench/events)
Each request is logged when it arrives ("begin": path, headers, body, time) and when answered ("end").
With TLS_PORT, the same is served over HTTPS with CERT and KEY.
"""
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]
lock = threading.Lock()
attempts = {}


def record(entry):
    with lock, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        parts = self.path.split("/")
        mode, name = (parts[2], parts[3]) if len(parts) >= 4 and parts[1] == "r" else ("ok", self.path)
        delivery = self.headers.get("X-Iwd-Delivery", "")
        if mode == "bench":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            event = json.loads(body)
            record({"t": time.time(), "id": delivery, "at": event["at"], "event": event["id"]})
            return
        with lock:
            attempts[delivery] = attempts.get(delivery, 0) + 1
            attempt = attempts[delivery]
        record({"ev": "begin", "t": time.time(), "path": self.path, "name": name, "id": delivery,
                "headers": dict(self.headers.items()), "body": body.decode("utf-8", "replace"),
                "tls": isinstance(self.connection, ssl.SSLSocket)})
        code, location = 200, None
        if mode == "fail1" and attempt == 1 or mode == "always500":
            code = 500
        elif mode == "hang":
            time.sleep(30)
        elif mode == "hold":
            time.sleep(3)
        elif mode == "brief":
            time.sleep(0.3)
        elif mode == "redirect":
            code, location = 302, "/r/ok/%s-redirected" % name
        reply = b"receiver says no" if code == 500 else b"{}"
        try:
            self.send_response(code)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except OSError:
            pass  # the sender went away (timed out or killed)
        record({"ev": "end", "t": time.time(), "name": name, "id": delivery, "code": code})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a sender killed or gone mid-request (the tests do it on purpose)


def serve(port, context=None):
    server = Server(("127.0.0.1", port), Receiver)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if len(sys.argv) > 3:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[4], sys.argv[5])
    threading.Thread(target=serve, args=(int(sys.argv[3]), tls), daemon=True).start()
serve(int(sys.argv[2]))
