#!/usr/bin/env python3
"""Holds N idle TLS keep-alive connections to a TLS listener, each after one request.

Usage: tls_hold.py HOST PORT N HOLD_SECONDS [SOURCE_IP_PREFIX]
Prints "held N" once every connection has made its request (the caller samples the proxy's RSS
then), holds them HOLD_SECONDS, and closes them. Certificates are not verified: this measures
memory, not trust. Several source addresses (127.0.0.2-...) keep clear of the ephemeral port
range of one address.
"""
import socket
import ssl
import sys
import time

host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.set_alpn_protocols(["http/1.1"])
request = b"GET / HTTP/1.1\r\nHost: hold\r\n\r\n"
conns = []
for i in range(n):
    raw = socket.socket()
    raw.bind((f"127.0.0.{2 + i % 19}", 0))
    raw.settimeout(30)
    raw.connect((host, port))
    try:
        s = ctx.wrap_socket(raw, server_hostname="hold.test")
    except OSError as e:
        sys.exit(f"connection {i + 1}: {e}")
    s.sendall(request)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, _, body = got.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += s.recv(4096)
    conns.append(s)
print(f"held {len(conns)}", flush=True)
time.sleep(hold)
for s in conns:
    s.close()
