#!/usr/bin/env python3
"""A DNS server for tests/dns.rs: answers A and AAAA questions from a JSON zone file that it reads
again for every question, so a test changes the answer by replacing the file (write, rename).

Usage: server.py ZONE_FILE [TTL_S]. The zone maps names to addresses:
{"app.test.": ["127.0.0.2", "::1"]}. A name not in the zone gets NXDOMAIN. The server binds UDP
on 127.0.0.1 port 0 and prints the port it got on its first line. Messages are built and read by
dnslib; nothing here writes DNS wire format by hand.
"""

import json
import socket
import sys

from dnslib import AAAA, QTYPE, RCODE, RR, A, DNSRecord


def answer(query, zone, ttl):
    reply = query.reply()
    name = str(query.q.qname).lower()
    if name not in zone:
        reply.header.rcode = RCODE.NXDOMAIN
        return reply
    for ip in zone[name]:
        if ":" in ip and query.q.qtype == QTYPE.AAAA:
            reply.add_answer(RR(query.q.qname, QTYPE.AAAA, rdata=AAAA(ip), ttl=ttl))
        elif ":" not in ip and query.q.qtype == QTYPE.A:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(ip), ttl=ttl))
    return reply


def main():
    zone_path = sys.argv[1]
    ttl = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            query = DNSRecord.parse(data)
        except Exception:  # not a DNS message: ignore it, as a server would
            continue
        with open(zone_path, encoding="utf-8") as f:
            zone = json.load(f)
        sock.sendto(answer(query, zone, ttl).pack(), peer)


if __name__ == "__main__":
    main()
