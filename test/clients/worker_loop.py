#!/usr/bin/python3
"""test/clients/worker_loop.py: a complete queue_engine worker loop from psycopg.

Run by test/clients/run.sh; prints "PASS ..." and exits 0, or "FAIL ..." and exits 1.
Uses psycopg2 (Debian python3-psycopg2) or, if only it is installed, psycopg 3
(python3-psycopg; QE_PSYCOPG=3 prefers it).

Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (the server or PgBouncer),
QE_CLIENT_LABEL (names the queue and the worker), QE_VIA_POOLER=1 when behind
PgBouncer in transaction mode (psycopg 3 then never prepares statements).
"""
import json
import os
import sys
import traceback

label = os.environ.get("QE_CLIENT_LABEL", "py")
via_pooler = os.environ.get("QE_VIA_POOLER") == "1"
queue = "clients_" + label
N = 20


def is_keyed(i): return i % 4 == 0        # enqueued twice with an idempotency key
def is_retried(i): return i % 5 == 1      # fail(retry_in => 0) on attempt 1
def is_permanent(i): return i % 10 == 3   # fail(permanent => true)


WAIT_I = 2                                # waits for client.go, woken by send_event

driver = None
if os.environ.get("QE_PSYCOPG") != "3":
    try:
        import psycopg2 as driver_mod
        driver = "psycopg2"
    except ImportError:
        pass
if driver is None:
    import psycopg as driver_mod
    driver = "psycopg"


def connect():
    # Connection parameters come from the libpq variables.
    if driver == "psycopg2":
        conn = driver_mod.connect("application_name=qe_clients_" + label)
        conn.autocommit = True
    else:
        # Behind a transaction pooler, psycopg 3 must not prepare (it would after 5 executions).
        conn = driver_mod.connect("application_name=qe_clients_" + label, autocommit=True,
                                  prepare_threshold=None if via_pooler else 5)
    return conn


checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        raise AssertionError("check failed: " + what)


def one(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def rows(conn, sql, args=()):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def main():
    worker = connect()   # worker loop
    other = connect()    # producer side: send_event from another connection
    stats = dict(enqueued=0, key_repeats=0, dequeued=0, heartbeats=0, completed=0, retried=0,
                 failed=0, fenced=0, waited=0, resumed=0)
    try:
        server = one(worker, "SELECT current_setting(%s)", ("server_version",))[0]
        protocol = ("client-side parameter interpolation, simple protocol" if driver == "psycopg2"
                    else "server-side parameters, extended protocol, prepare_threshold=%s"
                    % (None if via_pooler else 5))
        print("%s: python %s, %s %s, libpq %s, server %s, %s" % (
            label, sys.version.split()[0], driver, driver_mod.__version__.split()[0],
            driver_mod.__libpq_version__ if driver == "psycopg2" else driver_mod.pq.version(),
            server, protocol), flush=True)

        one(worker, "SELECT queue_engine.create_queue(%s, max_attempts => 3, lease => %s::interval)",
            (queue, "1 minute"))
        one(worker, "SELECT queue_engine.create_queue(%s, max_attempts => 3, lease => %s::interval)",
            (queue, "1 minute"))   # identical settings: a no-op

        by_run = {}
        for i in range(N):
            key = "%s-key-%d" % (label, i) if is_keyed(i) else None
            rid = one(other, "SELECT queue_engine.enqueue(%s, %s::jsonb, idempotency_key => %s)",
                      (queue, json.dumps({"i": i}), key))[0]
            check(rid > 0, "enqueue %d returned an id" % i)
            by_run[rid] = i
            stats["enqueued"] += 1
            if key:
                again = one(other, "SELECT queue_engine.enqueue(%s, %s::jsonb, idempotency_key => %s)",
                            (queue, json.dumps({"i": i, "again": True}), key))[0]
                check(again == rid, "idempotency key %s returns run %d" % (key, rid))
                stats["key_repeats"] += 1
        check(len(by_run) == N, "%d distinct runs" % N)

        # a blocking dequeue: sleeps in the server up to 100 ms when nothing is startable
        dequeue_sql = ("SELECT run_id, attempt, payload, resume FROM queue_engine.dequeue("
                       "ARRAY[%s::text], max_runs => %s, worker => %s, wait => %s::interval)")
        wait_run = wait_attempt = None
        resumed_ok = False
        seen = {}
        backends = set()
        for loop in range(200):
            args = (queue, 4, label + "-worker", "100 milliseconds")
            if loop == 0:   # one dequeue in an explicit transaction
                with worker.cursor() as cur:
                    cur.execute("BEGIN")
                    cur.execute(dequeue_sql, args)
                    got = cur.fetchall()
                    cur.execute("COMMIT")
            else:
                got = rows(worker, dequeue_sql, args)
            # Which server session ran it: through PgBouncer in transaction mode, not always the same.
            backends.add(one(worker, "SELECT pg_backend_pid()")[0])
            if not got:
                left = one(worker, "SELECT queued + delayed + executing + waiting FROM queue_engine.queue_stats"
                                   " WHERE queue = %s", (queue,))[0]
                if left == 0:
                    break
                continue
            for rid, attempt, payload, resume in got:
                i = payload["i"]
                stats["dequeued"] += 1
                check(by_run.get(rid) == i, "run %d carries its payload" % rid)
                prev = seen.get(rid)
                hb = one(worker, "SELECT queue_engine.heartbeat(%s, attempt => %s)", (rid, attempt))[0]
                check(hb is not None, "heartbeat of run %d attempt %d" % (rid, attempt))
                stats["heartbeats"] += 1
                stale = one(worker, "SELECT queue_engine.complete(%s, %s::jsonb, attempt => %s)",
                            (rid, '{"stale": true}', attempt + 1))[0]
                check(stale is False, "complete of run %d with a wrong attempt is refused" % rid)
                stats["fenced"] += 1

                if rid == wait_run:
                    check(resume is not None and resume.get("kind") == "event",
                          "run %d resumed by an event: %r" % (rid, resume))
                    check(resume["event"] == "client.go" and resume["data"]["k"] == rid,
                          "resume names client.go {k: %d}" % rid)
                    check(attempt == wait_attempt, "run %d resumed with the same attempt %d (got %d)"
                          % (rid, wait_attempt, attempt))
                    resumed_ok = True
                    stats["resumed"] += 1
                elif i == WAIT_I and wait_run is None:
                    check(resume is None, "first start of run %d has no resume" % rid)
                    s = one(worker, "SELECT queue_engine.wait_for_event(%s, %s, %s, %s::jsonb)",
                            (rid, attempt, "client.go", json.dumps({"k": rid})))[0]
                    check(s == "waiting", "wait_for_event -> waiting (got %s)" % s)
                    wait_run, wait_attempt = rid, attempt
                    stats["waited"] += 1
                    st, wf = one(worker, "SELECT status, waiting_for FROM queue_engine.get_run(%s)", (rid,))
                    check(st == "waiting" and wf["event"] == "client.go", "run %d waits for client.go" % rid)
                    ok = one(worker, "SELECT queue_engine.complete(%s, NULL, attempt => %s)", (rid, attempt))[0]
                    check(ok is False, "a waiting run's attempt cannot complete")
                    # Another connection and transaction sends the event.
                    with other.cursor() as cur:
                        cur.execute("BEGIN")
                        cur.execute("SELECT event_id, woken, canceled FROM queue_engine.send_event(%s, %s::jsonb)",
                                    ("client.go", json.dumps({"k": rid})))
                        ev = cur.fetchone()
                        cur.execute("COMMIT")
                    check(ev[1] == 1, "send_event woke 1 run (got %s)" % ev[1])
                    continue
                elif is_retried(i) and attempt == 1:
                    s = one(worker, "SELECT queue_engine.fail(%s, %s::jsonb, attempt => %s, retry_in => %s::interval)",
                            (rid, json.dumps({"message": "transient", "i": i}), attempt, "0"))[0]
                    check(s == "queued", "fail(retry_in 0) of run %d -> queued (got %s)" % (rid, s))
                    stats["retried"] += 1
                    seen[rid] = attempt
                    continue
                elif is_permanent(i):
                    s = one(worker, "SELECT queue_engine.fail(%s, %s::jsonb, attempt => %s, permanent => true)",
                            (rid, json.dumps({"message": "permanent", "i": i}), attempt))[0]
                    check(s == "failed", "fail(permanent) of run %d -> failed (got %s)" % (rid, s))
                    stats["failed"] += 1
                    seen[rid] = attempt
                    continue
                if prev is not None and rid != wait_run:
                    check(attempt == prev + 1, "retried run %d starts attempt %d (got %d)" % (rid, prev + 1, attempt))
                    old = one(worker, "SELECT queue_engine.heartbeat(%s, attempt => %s)", (rid, prev))[0]
                    check(old is None, "heartbeat of run %d's old attempt %d returns NULL" % (rid, prev))
                    stats["fenced"] += 1
                ok = one(worker, "SELECT queue_engine.complete(%s, %s::jsonb, attempt => %s)",
                         (rid, json.dumps({"done": i, "by": label}), attempt))[0]
                check(ok is True, "complete run %d attempt %d" % (rid, attempt))
                again = one(worker, "SELECT queue_engine.complete(%s, NULL, attempt => %s)", (rid, attempt))[0]
                check(again is False, "second complete of run %d is a no-op" % rid)
                stats["completed"] += 1
                seen[rid] = attempt
        if via_pooler:   # two server connections used in turn: the worker ran on both
            check(len(backends) >= 2, "worker's statements ran on %d server session(s), want 2" % len(backends))
        check(wait_run is not None and resumed_ok, "the waiting run was resumed by its event and completed")

        n_perm = sum(1 for i in by_run.values() if is_permanent(i))
        n_retr = sum(1 for i in by_run.values() if is_retried(i) and not is_permanent(i) and i != WAIT_I)
        check(stats["completed"] == N - n_perm, "completed %d = %d" % (stats["completed"], N - n_perm))
        check(stats["failed"] == n_perm, "failed %d = %d" % (stats["failed"], n_perm))
        check(stats["retried"] == n_retr, "retried %d = %d" % (stats["retried"], n_retr))
        by_status = dict((s, (n, a)) for s, n, a in rows(worker, """
            SELECT r.status::text, count(*)::int, sum(r.attempt)::int
              FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
             WHERE q.queue = %s GROUP BY 1""", (queue,)))
        check({s: v[0] for s, v in by_status.items()} == {"completed": N - n_perm, "failed": n_perm},
              "runs by status %r" % by_status)
        attempts = sum(v[1] for v in by_status.values())
        check(attempts == N + n_retr, "attempts %d = %d + %d retries (a wait uses none)" % (attempts, N, n_retr))
        check(stats["dequeued"] == N + n_retr + 1, "dequeued %d = runs + retries + 1 resume" % stats["dequeued"])
        qs = one(worker, "SELECT queued, delayed, executing, waiting FROM queue_engine.queue_stats WHERE queue = %s",
                 (queue,))
        check(all(v == 0 for v in qs), "queue_stats all 0: %r" % (qs,))
        bad = rows(worker, "SELECT check_name, found FROM queue_engine.check_consistency(false) WHERE found <> 0")
        check(not bad, "check_consistency(false) finds nothing: %r" % bad)
        print("PASS %s: %d runs (%d idempotent repeats), %d dequeued, %d completed, %d retried, %d failed, "
              "%d wait/event/resume, %d fenced calls refused, worker on %d server session(s), %d checks; "
              "check_consistency clean" % (
                  label, N, stats["key_repeats"], stats["dequeued"], stats["completed"], stats["retried"],
                  stats["failed"], stats["waited"], stats["fenced"], len(backends), checks), flush=True)
    finally:
        worker.close()
        other.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        print("FAIL %s: %s" % (label, traceback.format_exc()), flush=True)
        sys.exit(1)
