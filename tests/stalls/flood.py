"""Pipeline lock and unlock calls on one connection and never read a reply.

    python3 flood.py HOST PORT RESOURCE SECONDS

Sends ten calls (lock and unlock of RESOURCE by turns, each of which changes
the lock directory) every 100 ms on one keep-alive connection with an 8 KiB
receive buffer, so that lockd's replies fill the socket's buffers within a
second or two. Ends when lockd closes the connection or after SECONDS, and
prints how many calls it sent and whether the connection was cut.

(Why 8 KiB and not Linux's least, 2 KiB: with 2 KiB, run from the test,
this client stopped getting its calls through after about 50 of them, with
386 KB in its own send queue and nothing in lockd's receive queue (`ss`),
so lockd had no reply left to time out on. Why, was not found out; the
same client run from a plain script did get through.)
"""

import socket
import sys
import time


def call(method, resource):
    body = (
        "<?xml version='1.0'?><methodCall><methodName>%s</methodName><params>"
        "<param><value><string>%s</string></value></param>"
        "<param><value><string>stuck-client</string></value></param>"
        "</params></methodCall>" % (method, resource)
    ).encode()
    head = (
        "POST /RPC2 HTTP/1.1\r\nHost: lockd\r\nContent-Type: text/xml\r\n"
        "Content-Length: %d\r\n\r\n" % len(body)
    )
    return head.encode() + body


def main():
    host, port, resource, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    stream = socket.create_connection((host, port))
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    batch = b"".join(call("lock" if i % 2 == 0 else "unlock", resource) for i in range(10))
    # A send cut short by this timeout is not sent again: lockd would see
    # half a request. Once the buffers are full, sends wait; that is all.
    stream.settimeout(seconds)
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            stream.sendall(batch)
        except socket.timeout:
            break
        except OSError as error:
            print("sent %d calls, cut: %s" % (sent, error))
            return
        sent += 10
        time.sleep(0.1)
    print("sent %d calls, not cut" % sent)


main()
