"""A tiny HTTPS backend for sluice's backend TLS tests (Python's own ssl module, OpenSSL).

Usage: server.py CERT KEY. Listens on 127.0.0.1, an ephemeral port, and prints `port=N` once it
listens. The certificate and key are read again for every connection, so a test that replaces
the files changes what the next handshake presents. Paths:
  /count   -> `handshakes=N failed=M`: TLS handshakes completed and failed so far
  /health  -> 200 ok
  anything else -> 200 `hello from tls`
Responses are HTTP/1.1 keep-alive with Content-Length.
"""

import http.server
import socketserver
import ssl
import sys
import threading

CERT, KEY = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()
COUNTS = {"handshakes": 0, "failed": 0}


def count(name):
    with LOCK:
        COUNTS[name] += 1


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/count":
            with LOCK:
                body = "handshakes=%d failed=%d" % (COUNTS["handshakes"], COUNTS["failed"])
        elif self.path == "/health":
            body = "ok"
        else:
            body = "hello from tls"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = self.socket.accept()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        sock.settimeout(10)
        try:
            tls = ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            count("failed")
            sock.close()
            raise
        count("handshakes")
        return tls, addr

    def handle_error(self, request, client_address):
        pass


server = Server(("127.0.0.1", 0), Handler)
print("port=%d" % server.server_address[1], flush=True)
server.serve_forever()
