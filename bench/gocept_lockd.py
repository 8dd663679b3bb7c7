"""Run the real gocept.lockd 0.1 daemon under Python 2.7 for the benchmark.

    python2.7 bench/gocept_lockd.py SOURCES HOST PORT DIR

SOURCES holds the unpacked sdists of gocept.lockd 0.1 and zc.lockfile 1.2.1
(bench/driver.py fetches them with pip download). The daemon is run as it
is, with two things its own start-up would have done or needed: it opens
lockd.lock relative to its working directory, so it is started in DIR; and
its lock retry uses `time` without importing it, so the module gets it.

One setting is the benchmark's: the listen backlog goes from Python's 5 to
128, as for the stand-in. The daemon serves one connection at a time, and
lockd-bench connects all its clients before the first call; with a backlog
of 5 the sixth connection waits for a SYN retry while the daemon waits for
the first call, and the run never starts.
"""

import os
import sys
import time


def main():
    sources, host, port, directory = sys.argv[1:5]
    sys.path[:0] = [os.path.join(sources, 'gocept.lockd-0.1'),
                    os.path.join(sources, 'zc.lockfile-1.2.1', 'src')]
    from gocept.lockd import lockd
    lockd.time = time
    lockd.SimpleXMLRPCServer.SimpleXMLRPCServer.request_queue_size = 128
    os.chdir(directory)
    sys.stderr.write('gocept.lockd 0.1 (Python %s) on %s:%s with lock directory %s\n'
                     % (sys.version.split()[0], host, port, directory))
    sys.stderr.flush()
    lockd.main(host, int(port), directory)


if __name__ == '__main__':
    main()
