#!/usr/bin/env python3
"""A stand-in for the gocept.lockd 0.1 daemon, for benchmarks on machines
without Python 2.7 (bench/driver.py prefers the real one when it can run it).
tests/legacy/standin.py is the tests' stand-in, true to the original's
file format and its failures; this one is for throughput, with the options
the published figures used.

What it keeps from the original: Python's SimpleXMLRPCServer with
allow_none and the introspection methods; lock(resource, client) and
unlock(resource, client) on <dir>/<resource>.resource.lock, the holder read
back with surrounding white space stripped, the file written with no fsync;
every call under an exclusive flock on <dir>/lockd.lock, into which the pid
is written as zc.lockfile does; refusals as fault 1 with the text a Python 2
Exception gives, names quoted as Python 2 repr() of their UTF-8 bytes.

What it adds, for fair measurements only: --threaded (a thread per
connection; the flock is then taken blocking so threads queue instead of
failing) and --backlog (the original's listen backlog is 5). The original
also put names into paths unchecked; so does this.

    python3 bench/legacy.py --port PORT --dir DIR [--host H] [--threaded] [--backlog N]
"""

import argparse
import fcntl
import os
import socketserver
import sys
from xmlrpc.client import Fault
from xmlrpc.server import SimpleXMLRPCServer


def py2_repr(text):
    """What Python 2's repr() shows for the UTF-8 bytes of `text`."""
    data = text.encode('utf-8')
    quote = '"' if b"'" in data and b'"' not in data else "'"
    escapes = {ord('\\'): '\\\\', ord(quote): '\\' + quote,
               9: '\\t', 10: '\\n', 13: '\\r'}
    return quote + ''.join(
        escapes.get(b) or (chr(b) if 0x20 <= b < 0x7f else '\\x%02x' % b)
        for b in data) + quote


def refusal(message):
    return Fault(1, "<type 'exceptions.Exception'>:" + message)


class Lockd:
    def __init__(self, directory):
        self.directory = directory

    def _locked(self):
        """Open and flock lockd.lock; the caller closes it to release."""
        handle = open(os.path.join(self.directory, 'lockd.lock'), 'a+')
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(' %d\n' % os.getpid())
        handle.flush()
        return handle

    def _file(self, resource):
        return os.path.join(self.directory, resource + '.resource.lock')

    def lock(self, resource, client):
        with self._locked():
            path = self._file(resource)
            if os.path.exists(path):
                with open(path) as f:
                    holder = f.read().strip()
                raise refusal('Resource already locked by ' + py2_repr(holder))
            with open(path, 'w') as f:
                f.write(client)

    def unlock(self, resource, client):
        with self._locked():
            path = self._file(resource)
            if not os.path.exists(path):
                raise refusal('Resource not locked')
            with open(path) as f:
                holder = f.read().strip()
            if holder != client:
                raise refusal('Resource locked by %s cannot be unlocked by %s'
                              % (py2_repr(holder), py2_repr(client)))
            os.unlink(path)


def main():
    parser = argparse.ArgumentParser(description='gocept.lockd 0.1 stand-in')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--dir', required=True)
    parser.add_argument('--threaded', action='store_true')
    parser.add_argument('--backlog', type=int, default=5)
    args = parser.parse_args()
    if not os.path.isdir(args.dir):
        parser.error('--dir %s is not a directory' % args.dir)
    bases = (SimpleXMLRPCServer,)
    if args.threaded:
        bases = (socketserver.ThreadingMixIn,) + bases
    server_class = type('Server', bases, {'request_queue_size': args.backlog,
                                          'daemon_threads': True})
    server = server_class((args.host, args.port), allow_none=True, logRequests=False)
    server.register_introspection_functions()
    server.register_instance(Lockd(args.dir))
    sys.stderr.write('legacy stand-in listening on %s:%d with lock directory %s\n'
                     % (args.host, args.port, args.dir))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
