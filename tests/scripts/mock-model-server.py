#!/usr/bin/env python3
"""A stand-in for a model server (llama-server and the like) in the on-demand tests: it takes a
second to "load" before it listens, then answers chat completions with its model name.

    mock-model-server.py --port PORT --model NAME [--load-seconds 1]

POST /v1/chat/completions answers {"model": NAME, ...}; with "stream": true, server-sent events,
one every 0.5 s for the body's "seconds" (default 1), then data: [DONE]. GET /v1/models lists
NAME; any other GET answers 200. Each request is logged to stderr."""

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    model = "mock"

    def log_message(self, fmt, *args):
        sys.stderr.write("mock-model-server %s: %s\n" % (self.model, fmt % args))

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/v1/models"):
            self.json(200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        else:
            self.json(200, {"status": "ok", "model": self.model})

    def do_POST(self):
        try:
            req = json.loads(self.body() or b"{}")
        except ValueError:
            req = {}
        if not req.get("stream"):
            self.json(200, {
                "object": "chat.completion",
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": "I am " + self.model}}],
            })
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = max(1, int(float(req.get("seconds", 1)) / 0.5))
        for i in range(events):
            chunk = {"model": self.model, "choices": [{"index": 0, "delta": {"content": str(i)}}]}
            self.chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            time.sleep(0.5)
        self.chunk(b"data: [DONE]\n\n")
        self.chunk(b"")

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--load-seconds", type=float, default=1.0)
    a = p.parse_args()
    Handler.model = a.model
    time.sleep(a.load_seconds)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    sys.stderr.write("mock-model-server %s: listening on 127.0.0.1:%d\n" % (a.model, a.port))
    server.serve_forever()


if __name__ == "__main__":
    main()
