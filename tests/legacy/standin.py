"""A stand-in for gocept.lockd 0.1, for machines without Python 2.7.

It keeps the legacy daemon's behaviour where lockd meets it: the lock file
`<lockdir>/<resource>.resource.lock` holding the bare client string, read
back stripped; `lockd.lock` in the working directory, locked with flock
around every call and, when taken, a call that fails without touching any
lock file (gocept.lockd sleeps with a `time` it never imported); the faults
`<type 'exceptions.Exception'>:<message>` with Python 2's repr() of the
bytes read from the file. Usage: standin.py HOST PORT LOCKDIR
"""

import fcntl
import os
import sys
from xmlrpc.client import Fault
from xmlrpc.server import SimpleXMLRPCServer

TYPE = "<type 'exceptions.Exception'>:"
BUSY = "<type 'exceptions.NameError'>:global name 'time' is not defined"


class Refused(Exception):
    pass


def py2repr(raw):
    # Python 3's repr() of bytes, less the b prefix, is Python 2's of str.
    return repr(raw)[1:]


def locked(function):
    def wrapped(self, resource, client):
        with open("lockd.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise Refused(BUSY)
            try:
                return function(self, resource, client)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    wrapped.__name__ = function.__name__
    return wrapped


class Lockd:
    def __init__(self, lockdir):
        self.lockdir = lockdir

    def _path(self, resource):
        return os.path.join(self.lockdir, resource + ".resource.lock")

    @locked
    def lock(self, resource, client):
        path = self._path(resource)
        if os.path.exists(path):
            with open(path, "rb") as f:
                holder = f.read().strip()
            raise Refused(TYPE + "Resource already locked by " + py2repr(holder))
        with open(path, "wb") as f:
            f.write(client.encode("utf-8"))

    @locked
    def unlock(self, resource, client):
        path = self._path(resource)
        if not os.path.exists(path):
            raise Refused(TYPE + "Resource not locked")
        with open(path, "rb") as f:
            holder = f.read().strip()
        if client.encode("utf-8") != holder:
            raise Refused(
                TYPE + "Resource locked by %s cannot be unlocked by %s"
                % (py2repr(holder), py2repr(client.encode("utf-8")))
            )
        os.unlink(path)


class Server(SimpleXMLRPCServer):
    def _dispatch(self, method, params):
        try:
            return super()._dispatch(method, params)
        except Refused as refused:
            raise Fault(1, str(refused))


def main():
    host, port, lockdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = Server((host, port), allow_none=True, logRequests=False)
    server.register_introspection_functions()
    server.register_instance(Lockd(lockdir))
    server.serve_forever()


if __name__ == "__main__":
    main()
