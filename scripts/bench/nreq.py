"""Sends exactly N keep-alive GETs over 4 connections and waits for every answer.

Used to count instructions per request under callgrind: two runs with different N, and the
difference of the totals divided by the difference of N cancels start-up and shutdown."""
import socket, sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = [socket.create_connection((host, port)) for _ in range(4)]
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
bufs = [b""] * len(conns)
done = 0
while done < n:
    for i, s in enumerate(conns):
        if done >= n:
            break
        s.sendall(req)
        while True:
            b = bufs[i]
            end = b.find(b"\r\n\r\n")
            if end >= 0:
                head = b[:end].decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                if len(b) >= end + 4 + length:
                    bufs[i] = b[end + 4 + length:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"connection closed after {done} answers")
            bufs[i] += chunk
        done += 1
