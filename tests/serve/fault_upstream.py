#!/usr/bin/env python3
"""A faulty verification upstream for test_remote.sh, on loopback.

Usage: fault_upstream.py MODE [TARGET_URL] [N]
MODE: http500 | garbage | slow | hangup | after (forwards the first N
requests to TARGET_URL, then hangs up). Prints "port P" once listening;
counts the requests it got in its log (stderr) as "request K"."""
import http.server
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
        print("request %d" % count, file=sys.stderr, flush=True)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if MODE == "http500":
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
