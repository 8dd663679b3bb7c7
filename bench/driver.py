#!/usr/bin/env python3
"""The driver behind bench/run.sh (which builds the release binaries first).

In one run on one machine and one disk it starts, one at a time, lockd, the
trivial tiny_http responder (lockd-null), the legacy daemon and
Redis (appendfsync always, and without persistence), runs the load generator
lockd-bench against each for every client count, and measures lockd's
start-up, latency and locks() with many held locks, and its memory. Raw
results go to bench/out/, the summary to bench/results.md and
bench/throughput.svg. Standard library only; see bench/run.sh for settings.

The legacy daemon is the real gocept.lockd 0.1 (fetched from the package
index with pip) when Python 2.7 can be run, else the stand-in
bench/legacy.py; LEGACY=gocept or LEGACY=standin insists on one. The
results name the one used.
"""

import datetime
import http.client
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, 'bench', 'out')
RELEASE = os.path.join(REPO, 'target', 'release')
LOCKD = os.path.join(RELEASE, 'lockd')
NULL = os.path.join(RELEASE, 'lockd-null')
BENCH = os.path.join(RELEASE, 'lockd-bench')


def env_num(name, default, kind=float):
    value = os.environ.get(name, '')
    return kind(value) if value.strip() else default


QUICK = os.environ.get('QUICK') == '1'
WARMUP = env_num('WARMUP', 0.3 if QUICK else 1.0)
DURATION = env_num('DURATION', 1.0 if QUICK else 5.0)
REPS = env_num('REPS', 1 if QUICK else 3, int)
CLIENTS = [int(c) for c in os.environ.get('CLIENTS', '1 8 64').split()]
THREADS = env_num('THREADS', 2, int)
STAGGER_MS = env_num('STAGGER_MS', 2, int)
HELD = env_num('HELD', 100000, int)
IDLE_CONNS = env_num('IDLE_CONNS', 1000, int)
PROFILE = os.environ.get('PROFILE', '1') == '1'
WORK = os.environ.get('BENCH_DIR') or os.path.join(OUT, 'work')
LEGACY = os.environ.get('LEGACY', 'auto')
STANDIN = os.path.join(REPO, 'bench', 'legacy.py')
GOCEPT = os.path.join(REPO, 'bench', 'gocept_lockd.py')
LEGACY_SOURCES = os.path.join(OUT, 'legacy')
LEGACY_SDISTS = ('gocept.lockd-0.1', 'zc.lockfile-1.2.1')
TOP = max(CLIENTS)

LOG = None  # bench/out/run.log, opened in main()


def say(text):
    line = '%s %s' % (time.strftime('%H:%M:%S'), text)
    print(line, file=sys.stderr, flush=True)
    LOG.write(line + '\n')
    LOG.flush()


def sh(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ''


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fresh_dir(name):
    path = os.path.join(WORK, name)
    subprocess.run(['rm', '-rf', path], check=True)
    os.makedirs(path)
    return path


def rss_kib(pid, field='VmRSS'):
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- servers

def stop_process(proc):
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Server:
    """A server process started by the benchmark, with its log in bench/out."""

    def __init__(self, name, argv, protocol='xmlrpc', expect='lockd', port=None, env=None):
        self.name = name
        self.protocol = protocol
        self.expect = expect
        self.log_path = os.path.join(OUT, 'logs', '%s.log' % name)
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self.log = open(self.log_path, 'ab')
        offset = self.log.tell()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env,
                                     stdout=self.log, stderr=self.log)
        self.pid = self.proc.pid
        self.addr = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit('%s exited at start-up (%s); see %s'
                                 % (name, self.proc.returncode, self.log_path))
            if port is None:
                with open(self.log_path, 'rb') as f:
                    f.seek(offset)
                    found = re.findall(rb'listening on http://([0-9.]+:[0-9]+)/', f.read())
                if found:
                    self.addr = found[-1].decode()
                    return
            else:
                try:
                    socket.create_connection(('127.0.0.1', port), timeout=1).close()
                    self.addr = '127.0.0.1:%d' % port
                    return
                except OSError:
                    pass
            time.sleep(0.02)
        self.stop()
        raise SystemExit('%s did not start within 30 s; see %s' % (name, self.log_path))

    def stop(self):
        stop_process(self.proc)
        self.log.close()


def start_lockd(name='lockd', directory=None, binary=None):
    directory = directory or fresh_dir(name)
    return Server(name, [binary or LOCKD, '--dir', directory, '--listen', '127.0.0.1:0',
                         '--threads', str(THREADS)])


def start_trivial():
    return Server('trivial', [NULL, '--listen', '127.0.0.1:0', '--threads', str(THREADS)],
                  expect='noop')


def python27():
    """(argv, env, version) of a Python 2.7 that runs here, or None."""
    # pyenv's shims run a Python 2.7 only when asked for it by version.
    envs = [dict(os.environ), dict(os.environ, PYENV_VERSION='2.7.18')]
    for exe, env in ((exe, env) for env in envs for exe in ('python2.7', 'python2')):
        try:
            out = subprocess.run([exe, '-c', 'import sys; print(sys.version.split()[0])'],
                                 env=env, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.startswith('2.7'):
            return [exe], env, out.stdout.strip()
    return None


def fetch_gocept():
    """Unpack gocept.lockd 0.1 and zc.lockfile 1.2.1 into bench/out/legacy;
    an error message, or None."""
    import tarfile
    if all(os.path.isdir(os.path.join(LEGACY_SOURCES, d)) for d in LEGACY_SDISTS):
        return None
    os.makedirs(LEGACY_SOURCES, exist_ok=True)
    got = subprocess.run([sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps',
                          '--no-binary', ':all:', '--dest', LEGACY_SOURCES,
                          'gocept.lockd==0.1', 'zc.lockfile==1.2.1'],
                         capture_output=True, text=True)
    if got.returncode != 0:
        return 'pip download failed: %s' % (got.stderr.strip().splitlines() or ['?'])[-1]
    for name in LEGACY_SDISTS:
        with tarfile.open(os.path.join(LEGACY_SOURCES, name + '.tar.gz')) as tar:
            safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
            tar.extractall(LEGACY_SOURCES, **safe)
    return None


def choose_legacy():
    """How to start the legacy daemon: (argv before HOST PORT DIR, env, title)."""
    if LEGACY in ('auto', 'gocept'):
        found = python27()
        problem = None if found else 'no Python 2.7 (python2.7 or python2) runs here'
        problem = problem or fetch_gocept()
        if not problem:
            exe, env, version = found
            return (exe + [GOCEPT, LEGACY_SOURCES], env,
                    'legacy (gocept.lockd 0.1, Python %s)' % version)
        if LEGACY == 'gocept':
            raise SystemExit('LEGACY=gocept: %s' % problem)
        say('legacy daemon: %s, so the stand-in bench/legacy.py is used' % problem)
    # The stand-in gets a thread per connection and a longer listen queue,
    # as in the figures published with it.
    return (None, None, 'legacy (stand-in bench/legacy.py)')


LEGACY_RUN = None  # choose_legacy()'s answer, set in main()


def start_legacy():
    port = free_port()
    prefix, env, _ = LEGACY_RUN
    directory = fresh_dir('legacy')
    if prefix is None:
        argv = [sys.executable, STANDIN, '--port', str(port), '--dir', directory,
                '--threaded', '--backlog', '128']
    else:
        argv = prefix + ['127.0.0.1', str(port), directory]
    return Server('legacy', argv, port=port, env=env)


def set_legacy_title(title):
    SYSTEMS[:] = [(key, title if key == 'legacy' else t, start) for key, t, start in SYSTEMS]
    TITLES['legacy'] = title


def start_redis(name, persistence):
    port = free_port()
    return Server(name, ['redis-server', '--port', str(port), '--bind', '127.0.0.1',
                         '--dir', fresh_dir(name), '--daemonize', 'no', '--save', '',
                         '--logfile', ''] + persistence,
                  protocol='redis', port=port)


SYSTEMS = [
    ('lockd', 'lockd', start_lockd),
    ('trivial', 'trivial tiny_http responder', start_trivial),
    ('legacy', 'legacy', start_legacy),  # titled by set_legacy_title()
    ('redis-always', 'Redis, appendfsync always',
     lambda: start_redis('redis-always', ['--appendonly', 'yes', '--appendfsync', 'always'])),
    ('redis-none', 'Redis, no persistence',
     lambda: start_redis('redis-none', ['--appendonly', 'no'])),
]
# LOCKD_BASELINE=PATH adds another lockd binary (an earlier build, say) to
# the throughput and burst runs, measured side by side with this one.
BASELINE = os.environ.get('LOCKD_BASELINE')
if BASELINE:
    SYSTEMS.insert(1, ('baseline', 'lockd before (%s)' % os.path.basename(BASELINE),
                       lambda: start_lockd('baseline', binary=BASELINE)))
# SYSTEMS_ONLY="lockd trivial legacy" limits the throughput runs to these.
if os.environ.get('SYSTEMS_ONLY'):
    _only = os.environ['SYSTEMS_ONLY'].split()
    SYSTEMS = [s for s in SYSTEMS if s[0] in _only or s[0] == 'baseline']
TITLES = {key: title for key, title, _ in SYSTEMS}
TITLES.setdefault('baseline', 'lockd before')


# ----------------------------------------------------------- load generator

def bench(server, clients, mode='distinct', label=None, stagger=None,
          warmup=None, duration=None, background=False):
    warmup = WARMUP if warmup is None else warmup
    duration = DURATION if duration is None else duration
    argv = [BENCH, '--addr', server.addr, '--clients', str(clients),
            '--warmup', str(warmup), '--duration', str(duration), '--mode', mode,
            '--protocol', server.protocol, '--expect', server.expect,
            '--server-pid', str(server.pid), '--label', label or server.name,
            '--stagger-ms', str(STAGGER_MS if stagger is None else stagger)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    if background:
        return proc
    return bench_result(proc)


def bench_result(proc):
    out, _ = proc.communicate(timeout=600)
    with open(os.path.join(OUT, 'bench.log'), 'a') as f:
        f.write(out)
    lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
    if not lines:
        raise SystemExit('lockd-bench gave no result (exit %s):\n%s' % (proc.returncode, out))
    result = json.loads(lines[-1][len('RESULT '):])
    result['exit'] = proc.returncode
    if proc.returncode != 0:
        say('  WARNING: lockd-bench exit %s: %s' % (proc.returncode, result.get('problems')))
    return result


def short(r):
    return ('%-14s %-9s N=%-3d %7.0f cycles/s  lock p50 %.3f p99 %.3f ms  client CPU %3.0f%%'
            '  server CPU %s%%  starved %d  bad %d'
            % (r['label'], r['mode'], r['clients'], r['cycles_per_s'], r['lock_p50_ms'],
               r['lock_p99_ms'], r['client_cpu_pct'],
               '?' if r['server_cpu_pct'] is None else '%.0f' % r['server_cpu_pct'],
               r['starved'], r['errors'] + r['unexpected']))


# --------------------------------------------------------- lockd specifics

def xmlrpc_body(method, *params):
    body = "<?xml version='1.0'?>\n<methodCall>\n<methodName>%s</methodName>\n<params>\n" % method
    for p in params:
        body += '<param>\n<value><string>%s</string></value>\n</param>\n' % p
    return (body + '</params>\n</methodCall>\n').encode()


def post(addr, body, timeout=60):
    host, port = addr.rsplit(':', 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request('POST', '/RPC2', body, {'Content-Type': 'text/xml'})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def make_held_locks(directory, count):
    """count lock files in the documented format, written directly."""
    content = b'client-held\n2026-11-29T15:04:05Z\n'
    for i in range(count):
        fd = os.open(os.path.join(directory, 'held-%06d.resource.lock' % i),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, content)
        os.close(fd)
    os.sync()


class Timed:
    """lockd started with its stderr on a pipe: the time from exec to the
    "listening" line and to the first successful call."""

    def __init__(self, name, directory):
        self.name = name
        self.protocol, self.expect = 'xmlrpc', 'lockd'
        self.log = open(os.path.join(OUT, 'logs', '%s.log' % name), 'ab')
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [LOCKD, '--dir', directory, '--listen', '127.0.0.1:0', '--threads', str(THREADS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self.addr = None
        for line in self.proc.stderr:
            self.log.write(line)
            m = re.search(rb'listening on http://([0-9.]+:[0-9]+)/', line)
            if m:
                self.addr = m.group(1).decode()
                break
        self.listening = time.monotonic() - t0
        if self.addr is None:
            raise SystemExit('lockd did not start on %s' % directory)
        threading.Thread(target=self._drain, daemon=True).start()
        status, body = post(self.addr, xmlrpc_body('status', 'held-000000'))
        self.first_call = time.monotonic() - t0
        if status != 200 or b'<name>locked</name>' not in body:
            raise SystemExit('status call failed: %s %r' % (status, body[:200]))

    def _drain(self):
        for line in self.proc.stderr:
            self.log.write(line)

    def stop(self):
        stop_process(self.proc)


def time_locks(addr, expected):
    t0 = time.monotonic()
    status, body = post(addr, xmlrpc_body('locks'))
    elapsed = time.monotonic() - t0
    count = body.count(b'<name>resource</name>')
    if status != 200 or count != expected:
        raise SystemExit('locks() returned %d locks (HTTP %s), expected %d'
                         % (count, status, expected))
    return elapsed, len(body)


# ----------------------------------------------------------------- phases

def phase_throughput(results):
    for rep in range(REPS):
        order = SYSTEMS[rep % len(SYSTEMS):] + SYSTEMS[:rep % len(SYSTEMS)]
        for key, _, start in order:
            server = start()
            try:
                for n in CLIENTS:
                    r = bench(server, n)
                    r.update(system=key, rep=rep)
                    results.append(r)
                    say(short(r))
                if key != 'trivial':
                    r = bench(server, TOP, mode='contended')
                    r.update(system=key, rep=rep)
                    results.append(r)
                    say(short(r))
            finally:
                server.stop()


def phase_burst(extra):
    """64 clients connecting at the same moment (no stagger), on fresh servers."""
    extra['burst'] = []
    for rep in range(REPS):
        burst = [('lockd', start_lockd), ('trivial', start_trivial)]
        if BASELINE:
            burst.insert(1, ('baseline', lambda: start_lockd('baseline', binary=BASELINE)))
        for key, start in burst:
            server = start()
            try:
                r = bench(server, TOP, stagger=0, label=key + '-burst')
                r.update(system=key, rep=rep)
                extra['burst'].append(r)
                say(short(r))
            finally:
                server.stop()


def phase_idle_load(extra):
    """The top client count with and without IDLE_CONNS idle keep-alive
    connections held open on the same server, interleaved (the idle
    connections are opened by lockd-bench --mode idle in the background)."""
    extra['idle_load'] = []
    for rep in range(REPS):
        server = start_lockd('lockd-idle-load')
        try:
            for held in ((0, IDLE_CONNS) if rep % 2 == 0 else (IDLE_CONNS, 0)):
                idle = None
                if held:
                    idle = subprocess.Popen(
                        [BENCH, '--addr', server.addr, '--mode', 'idle', '--clients',
                         str(held), '--duration', str(WARMUP + DURATION + 30),
                         '--server-pid', str(server.pid), '--label', 'idle-held'],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True)
                    # Wait until every connection did its cycle and is held.
                    line = idle.stdout.readline()
                    while line and not line.startswith('ready:'):
                        line = idle.stdout.readline()
                r = bench(server, TOP, label='lockd+%d-idle' % held)
                r.update(system='lockd', rep=rep, idle_held=held)
                extra['idle_load'].append(r)
                say(short(r))
                if idle is not None:
                    idle.kill()
                    idle.communicate()
        finally:
            server.stop()


def phase_memory(extra):
    server = start_lockd('lockd-memory')
    try:
        time.sleep(1)
        extra['idle_rss_kib'] = rss_kib(server.pid)
        say('lockd idle RSS %s KiB' % extra['idle_rss_kib'])
        out = subprocess.run([BENCH, '--addr', server.addr, '--mode', 'idle',
                              '--clients', str(IDLE_CONNS), '--duration', '1',
                              '--server-pid', str(server.pid), '--label', 'lockd-idle'],
                             capture_output=True, text=True, timeout=300)
        with open(os.path.join(OUT, 'bench.log'), 'a') as f:
            f.write(out.stdout + out.stderr)
        lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
        if not lines:
            raise SystemExit('idle run failed:\n%s%s' % (out.stdout, out.stderr))
        extra['idle_conns'] = json.loads(lines[-1][len('RESULT '):])
        extra['idle_conns']['exit'] = out.returncode
        say('lockd RSS with %d idle connections: %s KiB (%s threads)'
            % (IDLE_CONNS, extra['idle_conns']['server_rss_kib'],
               extra['idle_conns']['server_threads']))
        time.sleep(0.5)
        extra['after_idle_rss_kib'] = rss_kib(server.pid)
    finally:
        server.stop()


def phase_held(extra):
    full = os.path.join(WORK, 'held-%d' % HELD)
    marker = os.path.join(full, '.complete')
    if not os.path.exists(marker):
        fresh_dir('held-%d' % HELD)
        t0 = time.monotonic()
        make_held_locks(full, HELD)
        open(marker, 'w').close()
        say('created %d lock files in %.1f s' % (HELD, time.monotonic() - t0))
    held = extra['held'] = {'count': HELD, 'runs': []}
    for rep in range(REPS):
        for case, directory in (('empty', fresh_dir('held-empty')), ('full', full)):
            d = Timed('lockd-%s' % case, directory)
            try:
                run = {'case': case, 'rep': rep, 'listening_s': d.listening,
                       'first_call_s': d.first_call}
                if case == 'full':
                    times = [time_locks(d.addr, HELD) for _ in range(3)]
                    run['locks_s'] = statistics.median(t for t, _ in times)
                    run['locks_bytes'] = times[0][1]
                    run['rss_kib'] = rss_kib(d.pid)
                for n in (1, TOP):
                    r = bench(d, n, label='lockd-%s' % case)
                    run['n%d' % n] = r
                    say(short(r))
                say('lockd start-up on %s dir: listening after %.3f s, first call after %.3f s%s'
                    % (case, d.listening, d.first_call,
                       ', locks() %.3f s' % run['locks_s'] if 'locks_s' in run else ''))
                held['runs'].append(run)
            finally:
                d.stop()


SYSCALLS = ['fsync', 'fdatasync', 'link', 'linkat', 'unlink', 'unlinkat', 'flock', 'openat',
            'close', 'read', 'recvfrom', 'write', 'writev', 'sendto', 'futex', 'statx',
            'newfstatat', 'poll', 'accept4']


def phase_profile(extra):
    have = sh('perf', 'list', 'syscalls:sys_enter_*')
    events = ['syscalls:sys_enter_%s' % s for s in SYSCALLS
              if 'syscalls:sys_enter_%s ' % s in have + ' ']
    prof = extra['profile'] = {}
    window = max(1.0, DURATION * 0.8)
    # Syscall counts over the window (tracepoints: little overhead).
    if events:
        server = start_lockd('lockd-profile')
        try:
            load = bench(server, TOP, background=True)
            time.sleep(WARMUP + 0.1)
            stat = subprocess.run(['perf', 'stat', '-x', ',', '-e', ','.join(events),
                                   '-p', str(server.pid), '--', 'sleep', str(window)],
                                  capture_output=True, text=True)
            r = bench_result(load)
            counts = {}
            for line in stat.stderr.splitlines():
                parts = line.split(',')
                if len(parts) > 2 and parts[2].startswith('syscalls:sys_enter_'):
                    try:
                        counts[parts[2][len('syscalls:sys_enter_'):]] = int(parts[0])
                    except ValueError:
                        pass
            prof['syscall_window_s'] = window
            prof['syscalls'] = counts
            prof['syscall_run'] = r
            say('syscalls over %.1f s at %d clients: %s' % (window, TOP, counts))
        finally:
            server.stop()
    # Where the CPU time goes (sampling, call graphs).
    server = start_lockd('lockd-profile')
    try:
        data = os.path.join(OUT, 'perf.data')
        load = bench(server, TOP, background=True)
        time.sleep(WARMUP + 0.1)
        rec = subprocess.run(['perf', 'record', '-F', '999', '-g', '-o', data,
                              '-p', str(server.pid), '--', 'sleep', str(window)],
                             capture_output=True, text=True)
        prof['record_run'] = bench_result(load)
        if rec.returncode == 0:
            report = subprocess.run(['perf', 'report', '-i', data, '--no-children', '--stdio',
                                     '--sort', 'symbol', '--percent-limit', '0.7', '-g', 'none'],
                                    capture_output=True, text=True)
            with open(os.path.join(OUT, 'perf-report.txt'), 'w') as f:
                f.write(report.stdout)
            top = []
            for line in report.stdout.splitlines():
                m = re.match(r'\s+([0-9.]+)%\s+\[(.)\]\s+(.*)', line)
                if m:
                    symbol = re.sub(r'(\s+-)+\s*$', '', m.group(3)).strip()
                    top.append((float(m.group(1)), m.group(2), symbol))
            prof['top'] = top[:20]
            comm = subprocess.run(['perf', 'report', '-i', data, '--no-children', '--stdio',
                                   '--sort', 'comm', '-g', 'none'],
                                  capture_output=True, text=True)
            prof['threads'] = [(float(m.group(1)), m.group(2)) for m in
                               re.finditer(r'\s+([0-9.]+)%\s+(\S+)', comm.stdout)][:8]
            say('profile: %s' % prof['top'][:5])
        else:
            prof['error'] = rec.stderr.strip()[-300:]
            say('perf record failed: %s' % prof['error'])
    finally:
        server.stop()


# ---------------------------------------------------------------- summary

def agg(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def select(results, system, mode, n):
    return [r for r in results if r['system'] == system and r['mode'] == mode
            and r['clients'] == n]


def fmt_rate(a):
    if a is None:
        return '–'
    med, lo, hi = a
    return '**%s** (%s–%s)' % (format(round(med), ','), format(round(lo), ','),
                               format(round(hi), ','))


def fmt(v, digits=2):
    return '–' if v is None else '%.*f' % (digits, v)


def median_of(rs, key):
    a = agg([r.get(key) for r in rs])
    return None if a is None else a[0]


def summary_rows(results, mode, clients):
    rows = []
    for key, title, _ in SYSTEMS:
        for n in clients:
            rs = select(results, key, mode, n)
            if not rs:
                continue
            rows.append('| %s | %d | %s | %s / %s | %s / %s | %s | %s | %s | %s |' % (
                title, n, fmt_rate(agg([r['cycles_per_s'] for r in rs])),
                fmt(median_of(rs, 'lock_p50_ms'), 3), fmt(median_of(rs, 'lock_p99_ms'), 3),
                fmt(median_of(rs, 'unlock_p50_ms'), 3), fmt(median_of(rs, 'unlock_p99_ms'), 3),
                fmt(max(r['lock_max_ms'] for r in rs), 1),
                '%.0f%%' % median_of(rs, 'client_cpu_pct'),
                '–' if median_of(rs, 'server_cpu_pct') is None
                else '%.0f%%' % median_of(rs, 'server_cpu_pct'),
                '%d / %d' % (max(r['starved'] for r in rs),
                             sum(r['errors'] + r['unexpected'] for r in rs))
                + (' (%s refusals/s)' % format(round(median_of(rs, 'refused_per_s')), ',')
                   if mode == 'contended' else '')))
    return rows


def ratio(results, a, b, n, mode='distinct'):
    x, y = agg([r['cycles_per_s'] for r in select(results, a, mode, n)]), \
        agg([r['cycles_per_s'] for r in select(results, b, mode, n)])
    if not x or not y or not y[0]:
        return None
    return x[0] / y[0]


def write_svg(results, path):
    series = [(key, title) for key, title, _ in SYSTEMS]
    colors = {'lockd': '#d62728', 'trivial': '#7f7f7f', 'legacy': '#1f77b4',
              'redis-always': '#2ca02c', 'redis-none': '#98df8a'}
    dashes = {'trivial': '6,4', 'redis-none': '3,3'}
    points = {}
    for key, _ in series:
        for n in CLIENTS:
            a = agg([r['cycles_per_s'] for r in select(results, key, 'distinct', n)])
            if a:
                points.setdefault(key, []).append((n, a))
    values = [v for ps in points.values() for _, a in ps for v in a[1:] if v > 0]
    if not values:
        return
    import math
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    W, H, L, R, T, B = 760, 440, 80, 230, 40, 60
    pw, ph = W - L - R, H - T - B
    xs = sorted(set(CLIENTS))
    lx0, lx1 = math.log(xs[0]), math.log(xs[-1]) if xs[-1] > xs[0] else math.log(xs[0]) + 1

    def X(n):
        return L + pw * (math.log(n) - lx0) / (lx1 - lx0)

    def Y(v):
        v = max(v, lo)
        return T + ph * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%d" y="22" font-size="14" font-weight="bold">lock+unlock cycles/s vs. '
           'concurrent clients (median of %d, bars: min–max)</text>' % (L, REPS)]
    decade = lo
    while decade <= hi:
        for m in (1, 2, 5):
            v = decade * m
            if lo <= v <= hi:
                y = Y(v)
                out.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>'
                           % (L, L + pw, y, y))
                out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>'
                           % (L - 6, y + 4, format(int(v), ',')))
        decade *= 10
    for n in xs:
        out.append('<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#ddd"/>'
                   % (X(n), X(n), T, T + ph))
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (X(n), T + ph + 18, n))
    out.append('<text x="%d" y="%d" text-anchor="middle">clients (keep-alive, distinct '
               'resources; log scale)</text>' % (L + pw / 2, H - 16))
    out.append('<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">'
               'cycles/s (log scale)</text>' % (T + ph / 2, T + ph / 2))
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>'
               % (L, T, pw, ph))
    for i, (key, title) in enumerate(series):
        ps = points.get(key)
        if not ps:
            continue
        c = colors.get(key, '#000')
        dash = ' stroke-dasharray="%s"' % dashes[key] if key in dashes else ''
        width = 3 if key == 'lockd' else 2
        out.append('<polyline fill="none" stroke="%s" stroke-width="%d"%s points="%s"/>' % (
            c, width, dash, ' '.join('%.1f,%.1f' % (X(n), Y(a[0])) for n, a in ps)))
        for n, (med, mn, mx) in ps:
            out.append('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s"/>'
                       % (X(n), X(n), Y(mn), Y(mx), c))
            out.append('<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>' % (X(n), Y(med), c))
        ly = T + 10 + 22 * i
        out.append('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="%d"%s/>'
                   % (L + pw + 15, L + pw + 45, ly, ly, c, width, dash))
        out.append('<text x="%d" y="%d">%s</text>' % (L + pw + 52, ly + 4, title))
    out.append('</svg>')
    with open(path, 'w') as f:
        f.write('\n'.join(out) + '\n')


def machine():
    cpu = ''
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), '')
    except OSError:
        pass
    df = sh('df', '-T', WORK).splitlines()
    fs = df[-1].split() if len(df) > 1 else ['?', '?']
    return {
        'nproc': os.cpu_count(),
        'cpu': cpu,
        'kernel': os.uname().release,
        'filesystem': '%s on %s' % (fs[1], fs[0]),
        'dir': WORK,
        'commit': sh('git', '-C', REPO, 'rev-parse', '--short', 'HEAD'),
        'dirty': bool(sh('git', '-C', REPO, 'status', '--porcelain', '--', 'src')),
        'redis': sh('redis-server', '--version').split(' v=')[-1].split(' ')[0],
        'python': sys.version.split()[0],
    }


def write_results(results, extra, info):
    lines = []
    w = lines.append
    w('# lockd benchmark results')
    w('')
    w('Generated by `bench/run.sh` (see docs/benchmarks.md); do not edit by hand.')
    w('')
    w('Measured %s to %s UTC on %d cores (%s), kernel %s, lock directories on %s '
      '(`%s`); lockd commit %s%s, Redis %s, Python %s. Load average (1 min) %s at the '
      'start, %s at the end. %d repetition(s), %.1f s warm-up + %.1f s window each; '
      'lockd and lockd-null with %d worker threads; clients connect %d ms apart.'
      % (info['start'], info['end'], info['nproc'], info['cpu'], info['kernel'],
         info['filesystem'], os.path.relpath(info['dir'], REPO), info['commit'],
         ' (with uncommitted changes in src/)' if info['dirty'] else '',
         info['redis'], info['python'], info['load_start'], info['load_end'],
         info.get('reps', REPS), info.get('warmup', WARMUP), info.get('duration', DURATION),
         info.get('threads', THREADS), info.get('stagger_ms', STAGGER_MS)))
    w('')
    w('The legacy daemon: %s.' % info.get('legacy', 'legacy (pylockd.py)').split(' (', 1)[-1].rstrip(')'))
    w('')
    w('Load generator and servers share the same cores: "client CPU" is the load '
      "generator's own CPU time (getrusage) as a share of one core, \"server CPU\" the "
      "server's (/proc/PID/stat), both over the window. Latencies are per call, medians "
      'over the repetitions of each run\'s percentile; max is the largest of all runs. '
      '"starved / bad": most clients with no cycle in a window / errors plus unexpected '
      'replies in all runs (must be 0).')
    w('')
    head = ('| server | clients | cycles/s median (min–max) | lock p50 / p99 ms | '
            'unlock p50 / p99 ms | max ms | client CPU | server CPU | starved / bad |')
    rule = '|---|---:|---:|---:|---:|---:|---:|---:|---|'
    w('## Throughput, distinct resources')
    w('')
    w(head)
    w(rule)
    lines.extend(summary_rows(results, 'distinct', CLIENTS))
    w('')
    w('![throughput](throughput.svg)')
    w('')
    w('## All clients contending for one resource (%d clients)' % TOP)
    w('')
    w('A cycle is a granted lock followed by its unlock; "already locked" refusals are '
      'expected here and counted on their own. Starved clients are expected when one '
      'resource is shared.')
    w('')
    w(head)
    w(rule)
    lines.extend(summary_rows(results, 'contended', [TOP]))
    w('')
    w('## Ratios (medians of this run)')
    w('')
    w('| clients | lockd / legacy | lockd / Redis always | lockd / Redis no persistence '
      '| lockd / trivial responder |')
    w('|---:|---:|---:|---:|---:|')
    for n in CLIENTS:
        w('| %d | %s | %s | %s | %s |' % (n, *(
            fmt(ratio(results, 'lockd', other, n)) + '×' if ratio(results, 'lockd', other, n)
            else '–' for other in ('legacy', 'redis-always', 'redis-none', 'trivial'))))
    if any(r['system'] == 'baseline' for r in results):
        w('')
        w('lockd / lockd before (same run): ' + ', '.join(
            '%d clients %s' % (n, fmt(ratio(results, 'lockd', 'baseline', n)) + '×'
                               if ratio(results, 'lockd', 'baseline', n) else '–')
            for n in CLIENTS) + '.')
    lockd_1 = agg([r['cycles_per_s'] for r in select(results, 'lockd', 'distinct', min(CLIENTS))])
    lockd_top = agg([r['cycles_per_s'] for r in select(results, 'lockd', 'distinct', TOP)])
    if lockd_1 and lockd_top:
        w('')
        w('Group commit: lockd at %d clients does %.1f× its own %d-client figure.'
          % (TOP, lockd_top[0] / lockd_1[0], min(CLIENTS)))
    w('')
    if extra.get('idle_load'):
        w('## %d clients with %d idle keep-alive connections open (lockd)' % (TOP, IDLE_CONNS))
        w('')
        w('The same fresh server measured without and with the idle connections, '
          'interleaved.')
        w('')
        w('| idle connections | cycles/s per run | median | lock p99 ms (median) |')
        w('|---:|---|---:|---:|')
        medians = {}
        for held in (0, IDLE_CONNS):
            rs = [r for r in extra['idle_load'] if r.get('idle_held') == held]
            if not rs:
                continue
            medians[held] = statistics.median(r['cycles_per_s'] for r in rs)
            w('| %d | %s | %s | %.3f |' % (
                held, ', '.join(format(round(r['cycles_per_s']), ',') for r in rs),
                format(round(medians[held]), ','),
                statistics.median(r['lock_p99_ms'] for r in rs)))
        if len(medians) == 2 and medians[0]:
            w('')
            w('With the idle connections: %.2f× the figure without them.'
              % (medians[IDLE_CONNS] / medians[0]))
        w('')
    if extra.get('burst'):
        w('## A burst of %d connections at once' % TOP)
        w('')
        w('The runs above connect clients %d ms apart. Here all %d connect at the same '
          'moment to a freshly started server:' % (STAGGER_MS, TOP))
        w('')
        w('| server | cycles/s per run | starved clients per run | longest call ms |')
        w('|---|---|---|---:|')
        for key in ('lockd', 'baseline', 'trivial'):
            rs = [r for r in extra['burst'] if r['system'] == key]
            if not rs:
                continue
            w('| %s | %s | %s | %s |' % (
                TITLES[key], ', '.join(format(round(r['cycles_per_s']), ',') for r in rs),
                ', '.join(str(r['starved']) for r in rs),
                fmt(max(r['lock_max_ms'] for r in rs), 0)))
        w('')
    if extra.get('held'):
        h = extra['held']
        w('## %s held locks versus an empty directory (lockd)' % format(h['count'], ','))
        w('')
        w('| | empty | %s held |' % format(h['count'], ','))
        w('|---|---:|---:|')

        def col(case, f):
            vals = [f(r) for r in h['runs'] if r['case'] == case]
            a = agg(vals)
            return '–' if a is None else a

        def row(name, f, digits=3, unit=''):
            e, fu = col('empty', f), col('full', f)
            cell = lambda a: a if a == '–' else '%.*f%s (%.*f–%.*f)' % (
                digits, a[0], unit, digits, a[1], digits, a[2])
            w('| %s | %s | %s |' % (name, cell(e), cell(fu)))

        row('start-up: exec to "listening" (s)', lambda r: r['listening_s'])
        row('start-up: exec to first answered call (s)', lambda r: r['first_call_s'])
        for n in sorted({1, TOP}):
            key = 'n%d' % n
            row('%d client(s): cycles/s' % n, lambda r: r[key]['cycles_per_s'], 0)
            row('%d client(s): lock p50 (ms)' % n, lambda r: r[key]['lock_p50_ms'])
            row('%d client(s): lock p99 (ms)' % n, lambda r: r[key]['lock_p99_ms'])
            row('%d client(s): unlock p50 (ms)' % n, lambda r: r[key]['unlock_p50_ms'])
        full = [r for r in h['runs'] if r['case'] == 'full']
        if full:
            a = agg([r['locks_s'] for r in full])
            w('')
            w('`locks()` with %s held: %.3f s median (%.3f–%.3f), response %.1f MB, from '
              'sending the call to the last byte of the reply (Python http.client).'
              % (format(h['count'], ','), a[0], a[1], a[2], full[0]['locks_bytes'] / 1e6))
        w('')
    if 'idle_rss_kib' in extra:
        ic = extra.get('idle_conns', {})
        w('## Memory (lockd)')
        w('')
        w('- idle, just started on an empty directory: %s KiB RSS (%.1f MiB)'
          % (extra['idle_rss_kib'], extra['idle_rss_kib'] / 1024))
        if ic.get('server_rss_kib'):
            w('- with %d idle keep-alive connections (each did one lock+unlock): %s KiB RSS '
              '(%.1f MiB), %s threads; %s closed by the server during the hold'
              % (ic['clients'], ic['server_rss_kib'], ic['server_rss_kib'] / 1024,
                 ic.get('server_threads'), int(ic.get('closed_by_server', 0))))
        if extra.get('after_idle_rss_kib'):
            w('- after those connections were closed: %s KiB RSS' % extra['after_idle_rss_kib'])
        w('')
    prof = extra.get('profile')
    if prof:
        w('## Profile (lockd, %d clients, distinct resources)' % TOP)
        w('')
        counts = prof.get('syscalls')
        if counts:
            window = prof['syscall_window_s']
            run = prof['syscall_run']
            ops = counts.get('link', 0) + counts.get('linkat', 0) + \
                counts.get('unlink', 0) + counts.get('unlinkat', 0)
            fsyncs = counts.get('fsync', 0) + counts.get('fdatasync', 0)
            w('System calls of the lockd process over %.1f s while the load generator ran '
              '(%s cycles/s in that run), counted with perf tracepoints:' % (
                  window, format(round(run['cycles_per_s']), ',')))
            w('')
            w('| syscall | per second |')
            w('|---|---:|')
            for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
                if count:
                    w('| %s | %s |' % (name, format(round(count / window), ',')))
            w('')
            if fsyncs:
                w('%.1f link/unlink per fsync: one directory fsync (plus one content-file '
                  'fsync per client and second) covers that many lock and unlock calls.'
                  % (ops / fsyncs))
                w('')
        if prof.get('top'):
            w('CPU samples (perf record -F 999 -g, %s cycles/s in that run), top symbols, '
              'self time ([k] kernel, [.] user):' % format(
                  round(prof['record_run']['cycles_per_s']), ','))
            w('')
            w('```')
            for pct, where, sym in prof['top']:
                w('%6.2f%% [%s] %s' % (pct, where, sym[:100]))
            w('```')
            if prof.get('threads'):
                w('')
                w('By thread: ' + ', '.join('%s %.1f%%' % (c, p) for p, c in prof['threads']))
            w('')
        elif prof.get('error'):
            w('perf record failed: `%s`' % prof['error'])
            w('')
    notes = os.path.join(REPO, 'bench', 'profile-notes.md')
    if os.path.exists(notes):
        with open(notes) as f:
            lines.append(f.read().rstrip())
        w('')
    with open(os.path.join(REPO, 'bench', 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def main():
    global LOG
    os.makedirs(os.path.join(OUT, 'logs'), exist_ok=True)
    os.makedirs(WORK, exist_ok=True)
    LOG = open(os.path.join(OUT, 'run.log'), 'a')
    for path, what in ((LOCKD, 'lockd'), (NULL, 'lockd-null'), (BENCH, 'lockd-bench')):
        if not os.path.exists(path):
            raise SystemExit('%s is missing: run bench/run.sh, which builds it' % path)
    fstype = sh('stat', '-f', '-c', '%T', WORK)
    if fstype == 'tmpfs':
        raise SystemExit('%s is on tmpfs: set BENCH_DIR to a directory on a disk' % WORK)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, IDLE_CONNS * 2 + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if sys.argv[1:] == ['--report-only']:
        # Rewrite results.md and the plot from the last run's raw results.
        with open(os.path.join(OUT, 'results.json')) as f:
            saved = json.load(f)
        # Runs before the legacy daemon was named used the Python 3 stand-in.
        set_legacy_title(saved['machine'].get('legacy', 'legacy (pylockd.py)'))
        write_results(saved['results'], saved['extra'], saved['machine'])
        write_svg(saved['results'], os.path.join(REPO, 'bench', 'throughput.svg'))
        return
    global LEGACY_RUN
    LEGACY_RUN = choose_legacy()
    set_legacy_title(LEGACY_RUN[2])
    info = machine()
    info['legacy'] = LEGACY_RUN[2]
    info.update(reps=REPS, warmup=WARMUP, duration=DURATION, threads=THREADS,
                stagger_ms=STAGGER_MS)
    info['start'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
    info['load_start'] = '%.2f' % os.getloadavg()[0]
    say('benchmark: %s, clients %s, %d reps, %.1f+%.1f s, dir %s (%s)'
        % ('QUICK' if QUICK else 'full', CLIENTS, REPS, WARMUP, DURATION, WORK, fstype))
    results, extra = [], {}
    phase_throughput(results)
    phase_burst(extra)
    phase_idle_load(extra)
    phase_memory(extra)
    phase_held(extra)
    if PROFILE:
        if sh('which', 'perf'):
            phase_profile(extra)
        else:
            say('perf is not installed: no profile')
    info['end'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
    info['load_end'] = '%.2f' % os.getloadavg()[0]
    with open(os.path.join(OUT, 'results.json'), 'w') as f:
        json.dump({'machine': info, 'results': results, 'extra': extra}, f, indent=1)
    write_results(results, extra, info)
    write_svg(results, os.path.join(REPO, 'bench', 'throughput.svg'))
    say('wrote bench/results.md, bench/throughput.svg and bench/out/results.json')


if __name__ == '__main__':
    main()
