#!/usr/bin/env python3
"""A faulty verification upstream for test_remote.sh, on loopback.

Usage: fault_upstream.py MODE [TARGET_URL] [N]
MODE: http500 | garbage | slow | hangup | after (forwards the first N
requests to TARGET_URL, then hangs up), and for a cloud fallback's
streamed completions: sse_garbage (a chunk, then malformed JSON) |
sse_cut (two chunks, then the connection closes without the stream's
end). Prints "port P" once listening; counts the requests it got in its
log (stderr) as "request K PATH BYTES"; it never logs their content."""
import http.server
import json
import socketserver
import sys
import time
import urllib.request

MODE = sys.argv[1]
TARGET = sys.argv[2] if len(sys.argv) > 2 else None
N = int(sys.argv[3]) if len(sys.argv) > 3 else 0
count = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        global count
        count += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print("request %d %s %d" % (count, self.path, len(body)),
              file=sys.stderr, flush=True)
        if MODE in ("sse_garbage", "sse_cut"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            chat = self.path.endswith("/chat/completions")
            for piece in ("Hello", " world"):
                c = {"delta": {"content": piece}} if chat else {"text": piece}
                c.update(index=0, finish_reason=None)
                self.wfile.write(b"data: " + json.dumps(
                    {"object": "chunk", "choices": [c]}).encode() + b"\n\n")
                self.wfile.flush()
            if MODE == "sse_garbage":
                self.wfile.write(b'data: {"choices":[{"text":\n\n')
                self.wfile.flush()
            self.connection.shutdown(2)
        elif MODE == "http500":
            self.reply(500, b'{"error":{"message":"boom"}}')
        elif MODE == "garbage":
            self.reply(200, b'{"accepted":[1,2,3')
        elif MODE == "slow":
            time.sleep(5)
            self.reply(200, b'{"accepted":[],"next":1}')
        elif MODE == "after" and count <= N:
            req = urllib.request.Request(TARGET + self.path, data=body,
                                         headers={"Content-Type":
                                                  "application/json"})
            self.reply(200, urllib.request.urlopen(req).read())
        else:   # hangup: headers promise a body that never comes
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"accepted":[')
            self.wfile.flush()
            self.connection.shutdown(2)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
print("port %d" % srv.server_address[1], flush=True)
srv.serve_forever()
