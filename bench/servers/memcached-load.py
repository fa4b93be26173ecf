#!/usr/bin/env python3
"""A client's load on memcached, for bench/servers.json: sets (70%, noreply) and gets random keys
of a 600,000-key space, values of 100-3,000 bytes, 200 requests to a batch, until killed.
usage: memcached-load.py PORT"""
import os
import random
import socket
import sys

port = int(sys.argv[1])
s = socket.create_connection(('127.0.0.1', port))
rnd = random.Random(1)
blob = os.urandom(4096)
while True:
    batch = []
    for _ in range(200):
        k = rnd.randrange(600_000)
        if rnd.random() < 0.7:
            n = rnd.randrange(100, 3000)
            batch.append(b'set k%d 0 0 %d noreply\r\n%s\r\n' % (k, n, blob[:n]))
        else:
            batch.append(b'mg k%d v q\r\n' % k)
    batch.append(b'mn\r\n')  # the end of the batch: memcached answers MN once it has done the rest
    s.sendall(b''.join(batch))
    data = b''
    while not data.endswith(b'MN\r\n'):
        data += s.recv(1 << 20)
