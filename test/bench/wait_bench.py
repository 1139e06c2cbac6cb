#!/usr/bin/python3
"""test/bench/wait_bench.py: workload 15 of test/bench/run.sh, blocking dequeue.

Connects with libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE, PGOPTIONS), every
connection in autocommit mode, through psycopg2 (Debian python3-psycopg2) or psycopg 3.

  latency QUEUE --samples N --waiters W --mode block|poll [--wait '10 s'] [--poll-ms 10]
      W waiter threads, each on its own connection, loop: block = SELECT * FROM
      queue_engine.dequeue(ARRAY[QUEUE], wait => WAIT); poll = dequeue without wait, sleeping
      poll-ms after an empty one; a run returned is completed (queue_engine.complete), then the
      loop goes on.  The producer (its own connection), N times: block = waits until every
      waiter is asleep in the dequeue (pg_stat_activity: wait_event_type 'Extension'); poll =
      sleeps a random 0 .. poll-ms; then BEGIN, enqueue(QUEUE) of one run, t0 = time.monotonic()
      just before COMMIT is sent; the waiter that gets the run takes t1 = time.monotonic() just
      after its dequeue returned.  Prints one line:
        n p50_ms p99_ms mean_ms max_ms commit_p50_ms commit_p99_ms lost cancel_max_ms
      (commit_*: the producer's COMMIT round trip; lost: samples no waiter returned within 15 s;
      cancel_max_ms: block mode, the longest pg_cancel_backend -> error of the waiters at the
      end, each canceled while asleep).
  idle QUEUE --conns C --seconds S [--wait '10 s']
      C threads, each on its own connection, loop SELECT * FROM queue_engine.dequeue(ARRAY[QUEUE],
      wait => WAIT) on an empty queue.  Once all C are asleep, for S seconds: their backends'
      CPU (utime + stime of /proc/<pid>/stat, before and after), and once a second
      pg_stat_activity for their pids.  Then each is canceled while asleep.  Prints one line:
        cpu_pct_of_one_core cpu_ticks seconds samples min_asleep xmin_while_asleep pids_seen_asleep
        cancel_max_ms server_cpu_pct client_cpu_pct
      (xmin_while_asleep: observations of a backend asleep in the dequeue with backend_xmin
      not NULL, which must be 0; server_cpu_pct: every process of the server (postmaster and
      all its children, the waiters included) over the same period; client_cpu_pct: this script.)
"""
import argparse
import os
import queue as queue_mod
import random
import sys
import threading
import time

try:
    import psycopg2 as driver

    def connect():
        conn = driver.connect("")
        conn.autocommit = True
        return conn

    QueryCanceled = driver.extensions.QueryCanceledError
except ImportError:  # psycopg 3
    import psycopg as driver

    def connect():
        return driver.connect("", autocommit=True)

    QueryCanceled = driver.errors.QueryCanceled

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values, p):
    """The value at rank ceil(n * p) of the sorted values (as run.sh's pgb does)."""
    v = sorted(values)
    if not v:
        return float("nan")
    i = int(len(v) * p)
    if i < len(v) * p:
        i += 1
    return v[max(i, 1) - 1]


def proc_ticks(pid):
    """utime + stime of a process, in clock ticks (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def server_pids(any_backend):
    """The postmaster (the parent of a backend) and all its children."""
    try:
        with open(f"/proc/{any_backend}/stat") as f:
            postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return []
    pids = [postmaster]
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return pids


def sum_ticks(pids):
    return sum(t for t in (proc_ticks(p) for p in pids) if t is not None)


class Waiter(threading.Thread):
    """One worker: its own connection, dequeue in a loop until stopped or canceled."""

    def __init__(self, qname, mode, wait, poll_s, results):
        super().__init__(daemon=True)
        self.qname, self.mode, self.wait, self.poll_s, self.results = qname, mode, wait, poll_s, results
        self.conn = connect()
        cur = self.conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        self.pid = cur.fetchone()[0]
        self.stop = False
        self.canceled_at = None
        self.error = None

    def run(self):
        cur = self.conn.cursor()
        try:
            while not self.stop:
                if self.mode == "poll":
                    cur.execute("SELECT run_id FROM queue_engine.dequeue(ARRAY[%s])", (self.qname,))
                else:
                    cur.execute("SELECT run_id FROM queue_engine.dequeue(ARRAY[%s], wait => %s::interval)",
                                (self.qname, self.wait))
                rows = cur.fetchall()
                t1 = time.monotonic()
                if not rows:
                    if self.mode == "poll":
                        time.sleep(self.poll_s)
                    continue
                for (run_id,) in rows:
                    if self.results is not None:
                        self.results.put(t1)
                    cur.execute("SELECT queue_engine.complete(%s)", (run_id,))
        except QueryCanceled:
            self.canceled_at = time.monotonic()
        except Exception as e:  # noqa: BLE001 (reported by the caller)
            self.error = e
        finally:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass


def asleep(cur, pids):
    """The pids among these asleep in an Extension wait (the blocking dequeue)."""
    cur.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY (%s) AND state = 'active'"
                " AND wait_event_type = 'Extension'", (list(pids),))
    return {r[0] for r in cur.fetchall()}


def wait_all_asleep(cur, pids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        if len(asleep(cur, pids)) == len(pids):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


def cancel_all(cur, waiters):
    """pg_cancel_backend each waiter (asleep, in block mode); the longest cancel -> error, ms."""
    worst = 0.0
    for w in waiters:
        w.stop = True
        t = time.monotonic()
        cur.execute("SELECT pg_cancel_backend(%s)", (w.pid,))
        w.join(15)
        if w.canceled_at is not None:
            worst = max(worst, (w.canceled_at - t) * 1000)
    return worst


def latency(a):
    results = queue_mod.Queue()
    waiters = [Waiter(a.queue, a.mode, a.wait, a.poll_ms / 1000.0, results) for _ in range(a.waiters)]
    for w in waiters:
        w.start()
    prod = connect()
    cur = prod.cursor()
    pids = {w.pid for w in waiters}
    lat, commit, lost = [], [], 0
    for _ in range(a.samples):
        if a.mode == "block":
            if not wait_all_asleep(cur, pids, 15):
                sys.exit("wait_bench: the waiters were not all asleep in dequeue within 15 s "
                         f"({len(asleep(cur, pids))} of {len(pids)}; errors: "
                         f"{[str(w.error) for w in waiters if w.error]})")
        else:
            time.sleep(random.uniform(0, a.poll_ms / 1000.0))
        cur.execute("BEGIN")
        cur.execute("SELECT queue_engine.enqueue(%s, '{\"n\": 1}')", (a.queue,))
        cur.fetchall()
        t0 = time.monotonic()
        cur.execute("COMMIT")
        tc = time.monotonic()
        try:
            t1 = results.get(timeout=15)
        except queue_mod.Empty:
            lost += 1
            continue
        lat.append((t1 - t0) * 1000)
        commit.append((tc - t0) * 1000)
    cancel_ms = 0.0
    if a.mode == "block":
        wait_all_asleep(cur, pids, 15)
        cancel_ms = cancel_all(cur, waiters)
    else:
        for w in waiters:
            w.stop = True
        for w in waiters:
            w.join(15)
    errors = [str(w.error) for w in waiters if w.error]
    if errors:
        sys.exit(f"wait_bench: waiter errors: {errors}")
    print(len(lat), f"{pct(lat, 0.5):.3f}", f"{pct(lat, 0.99):.3f}",
          f"{(sum(lat) / len(lat) if lat else float('nan')):.3f}", f"{(max(lat) if lat else float('nan')):.3f}",
          f"{pct(commit, 0.5):.3f}", f"{pct(commit, 0.99):.3f}", lost, f"{cancel_ms:.3f}")


def idle(a):
    waiters = [Waiter(a.queue, "block", a.wait, 0, None) for _ in range(a.conns)]
    for w in waiters:
        w.start()
    mon = connect()
    cur = mon.cursor()
    pids = {w.pid for w in waiters}
    if not wait_all_asleep(cur, pids, 60):
        sys.exit(f"wait_bench: only {len(asleep(cur, pids))} of {len(pids)} waiters asleep in dequeue after 60 s")
    time.sleep(1)
    server = server_pids(next(iter(pids)))
    c0, s0, t0, u0 = sum_ticks(pids), sum_ticks(server), time.monotonic(), os.times()
    samples, min_asleep, xmin_bad, seen = 0, len(pids), 0, set()
    end = t0 + a.seconds
    while time.monotonic() < end:
        cur.execute("SELECT pid, wait_event_type = 'Extension' AND state = 'active',"
                    " backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = ANY (%s)", (list(pids),))
        n = 0
        for pid, is_asleep, has_xmin in cur.fetchall():
            if is_asleep:
                n += 1
                seen.add(pid)
                if has_xmin:
                    xmin_bad += 1
        samples += 1
        min_asleep = min(min_asleep, n)
        time.sleep(max(0.0, min(1.0, end - time.monotonic())))
    c1, s1, t1, u1 = sum_ticks(pids), sum_ticks(server), time.monotonic(), os.times()
    wait_all_asleep(cur, pids, 15)
    cancel_ms = cancel_all(cur, waiters)
    errors = [str(w.error) for w in waiters if w.error]
    if errors:
        sys.exit(f"wait_bench: waiter errors: {errors}")
    secs = t1 - t0
    client = (u1.user - u0.user) + (u1.system - u0.system)
    print(f"{(c1 - c0) / CLK_TCK / secs * 100:.3f}", c1 - c0, f"{secs:.1f}", samples, min_asleep, xmin_bad,
          len(seen), f"{cancel_ms:.3f}", f"{(s1 - s0) / CLK_TCK / secs * 100:.3f}", f"{client / secs * 100:.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pl = sub.add_parser("latency")
    pl.add_argument("queue")
    pl.add_argument("--samples", type=int, default=1000)
    pl.add_argument("--waiters", type=int, default=1)
    pl.add_argument("--mode", choices=["block", "poll"], default="block")
    pl.add_argument("--wait", default="10 s")
    pl.add_argument("--poll-ms", type=float, default=10)
    pi = sub.add_parser("idle")
    pi.add_argument("queue")
    pi.add_argument("--conns", type=int, default=100)
    pi.add_argument("--seconds", type=float, default=30)
    pi.add_argument("--wait", default="10 s")
    a = p.parse_args()
    latency(a) if a.cmd == "latency" else idle(a)


if __name__ == "__main__":
    main()
