"""A webhook receiver for loadtests/bench.sh: answers every POST 204 at once and
prints `got <event id>` per delivery (the bench counts them). Threaded, keep-alive.

Usage: python3 webhook_receiver.py HOST PORT   (PORT 0: any; prints `listening URL`)
"""
import http.server
import json
import sys


class Hook(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the dispatcher's pool expects

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event_id = json.loads(body)["id"]
        except (ValueError, KeyError):
            event_id = "?"
        print(f"got {event_id}", flush=True)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Hook)
print(f"listening http://{sys.argv[1]}:{server.server_address[1]}", flush=True)
server.serve_forever()
