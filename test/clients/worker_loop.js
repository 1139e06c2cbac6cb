// test/clients/worker_loop.js: a complete queue_engine worker loop from node-postgres (`pg`).
// Run by test/clients/run.sh; prints "PASS ..." and exits 0, or "FAIL ..." and exits 1.
//
// Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (where to connect: the server or PgBouncer),
//   QE_CLIENT_LABEL (names the queue and the worker), QE_NAMED_STATEMENTS=1 to also use a
//   named prepared statement (only where the server connection is ours or the pooler tracks them).
'use strict';
const pg = require('pg');
const pgVersion = require('pg/package.json').version;

const label = process.env.QE_CLIENT_LABEL || 'node';
const named = process.env.QE_NAMED_STATEMENTS === '1';
const queue = `clients_${label}`;
const N = 20;                                   // distinct runs
const isKeyed = (i) => i % 4 === 0;             // enqueued twice with an idempotency key
const isRetried = (i) => i % 5 === 1;           // fail(retry_in => 0) on attempt 1, complete on 2
const isPermanent = (i) => i % 10 === 3;        // fail(permanent => true)
const WAIT_I = 2;                               // waits for client.go, woken by send_event

let checks = 0;
function check(cond, what) {
  checks++;
  if (!cond) throw new Error(`check failed: ${what}`);
}

function connect() {
  // Connection parameters come from the libpq variables; no pool: one server session each.
  return new pg.Client({ application_name: `qe_clients_${label}` });
}

async function main() {
  const worker = connect();      // worker loop
  const other = connect();       // producer side: send_event from another connection
  await worker.connect();
  await other.connect();
  const stats = { enqueued: 0, keyRepeats: 0, dequeued: 0, heartbeats: 0, completed: 0,
                  retried: 0, failedPermanent: 0, fenced: 0, waited: 0, resumed: 0, namedCalls: 0 };
  try {
    const server = (await worker.query('SELECT current_setting($1) AS v', ['server_version'])).rows[0].v;
    console.log(`${label}: node ${process.version}, pg (node-postgres) ${pgVersion}, server ${server}, ` +
                `extended protocol, named prepared statements: ${named ? 'yes (qe_dequeue)' : 'no (unnamed only)'}`);

    await worker.query('SELECT queue_engine.create_queue($1, max_attempts => 3, lease => $2::interval)',
                       [queue, '1 minute']);
    // Re-creating with identical settings is a no-op.
    await worker.query('SELECT queue_engine.create_queue($1, max_attempts => 3, lease => $2::interval)',
                       [queue, '1 minute']);

    // Producer: N runs, some with idempotency keys (each sent twice: same id back).
    const byRun = new Map();     // run_id -> i
    for (let i = 0; i < N; i++) {
      const key = isKeyed(i) ? `${label}-key-${i}` : null;
      const r = await other.query(
        'SELECT queue_engine.enqueue($1, $2::jsonb, idempotency_key => $3) AS id',
        [queue, JSON.stringify({ i }), key]);
      const id = Number(r.rows[0].id);
      check(id > 0, `enqueue ${i} returned an id`);
      byRun.set(id, i);
      stats.enqueued++;
      if (key) {
        const again = await other.query(
          'SELECT queue_engine.enqueue($1, $2::jsonb, idempotency_key => $3) AS id',
          [queue, JSON.stringify({ i, again: true }), key]);
        check(Number(again.rows[0].id) === id, `idempotency key ${key} returns run ${id}`);
        stats.keyRepeats++;
      }
    }
    check(byRun.size === N, `${N} distinct runs`);

    // a blocking dequeue: sleeps in the server up to 100 ms when nothing is startable
    const dequeueSql = 'SELECT run_id, attempt, payload, resume FROM queue_engine.dequeue(ARRAY[$1::text], max_runs => $2, worker => $3, wait => $4::interval)';
    let waitRun = null, waitAttempt = null, resumedOk = false, inTx = false;
    const seenAttempts = new Map();
    const backends = new Set();
    for (let loop = 0; loop < 200; loop++) {
      // One dequeue in an explicit transaction (BEGIN ... COMMIT), the others autocommit;
      // on the direct connection every dequeue goes through a named prepared statement.
      let res;
      const q = named ? { name: 'qe_dequeue', text: dequeueSql, values: [queue, 4, `${label}-worker`, '100 milliseconds'] }
                      : { text: dequeueSql, values: [queue, 4, `${label}-worker`, '100 milliseconds'] };
      if (loop === 0) {
        inTx = true;
        await worker.query('BEGIN');
        res = await worker.query(q);
        await worker.query('COMMIT');
        inTx = false;
      } else {
        res = await worker.query(q);
      }
      if (named) stats.namedCalls++;
      // Which server session ran it: through PgBouncer in transaction mode, not always the same.
      backends.add((await worker.query('SELECT pg_backend_pid() AS p')).rows[0].p);
      if (res.rows.length === 0) {
        const left = await worker.query(
          'SELECT queued + delayed + executing + waiting AS n FROM queue_engine.queue_stats WHERE queue = $1', [queue]);
        if (Number(left.rows[0].n) === 0) break;
        continue;
      }
      for (const row of res.rows) {
        const id = Number(row.run_id), attempt = row.attempt, i = row.payload.i;
        stats.dequeued++;
        check(byRun.get(id) === i, `run ${id} carries its payload`);
        const prev = seenAttempts.get(id);
        // Attempt fencing: the stale attempt's calls change nothing.
        const hb = await worker.query('SELECT queue_engine.heartbeat($1, attempt => $2) AS t', [id, attempt]);
        check(hb.rows[0].t !== null, `heartbeat of run ${id} attempt ${attempt}`);
        stats.heartbeats++;
        const stale = await worker.query('SELECT queue_engine.complete($1, $2::jsonb, attempt => $3) AS ok',
                                         [id, '{"stale": true}', attempt + 1]);
        check(stale.rows[0].ok === false, `complete of run ${id} with a wrong attempt is refused`);
        stats.fenced++;

        if (id === waitRun) {
          check(row.resume !== null && row.resume.kind === 'event', `run ${id} resumed by an event: ${JSON.stringify(row.resume)}`);
          check(row.resume.event === 'client.go' && Number(row.resume.data.k) === id, `resume names client.go {k: ${id}}`);
          check(attempt === waitAttempt, `run ${id} resumed with the same attempt ${waitAttempt} (got ${attempt})`);
          resumedOk = true;
          stats.resumed++;
        } else if (i === WAIT_I && waitRun === null) {
          check(row.resume === null, `first start of run ${id} has no resume`);
          const w = await worker.query(
            'SELECT queue_engine.wait_for_event($1, $2, $3, $4::jsonb) AS s',
            [id, attempt, 'client.go', JSON.stringify({ k: id })]);
          check(w.rows[0].s === 'waiting', `wait_for_event -> waiting (got ${w.rows[0].s})`);
          waitRun = id; waitAttempt = attempt; stats.waited++;
          const gr = await worker.query('SELECT status, waiting_for FROM queue_engine.get_run($1)', [id]);
          check(gr.rows[0].status === 'waiting' && gr.rows[0].waiting_for.event === 'client.go', `run ${id} waits for client.go`);
          // The waiting attempt cannot complete.
          const c = await worker.query('SELECT queue_engine.complete($1, NULL, attempt => $2) AS ok', [id, attempt]);
          check(c.rows[0].ok === false, `a waiting run's attempt cannot complete`);
          // Another connection and transaction sends the event.
          await other.query('BEGIN');
          const ev = await other.query('SELECT event_id, woken, canceled FROM queue_engine.send_event($1, $2::jsonb)',
                                       ['client.go', JSON.stringify({ k: id })]);
          await other.query('COMMIT');
          check(Number(ev.rows[0].woken) === 1, `send_event woke 1 run (got ${ev.rows[0].woken})`);
          continue;
        } else if (isRetried(i) && attempt === 1) {
          const f = await worker.query(
            'SELECT queue_engine.fail($1, $2::jsonb, attempt => $3, retry_in => $4::interval) AS s',
            [id, JSON.stringify({ message: 'transient', i }), attempt, '0']);
          check(f.rows[0].s === 'queued', `fail(retry_in 0) of run ${id} -> queued (got ${f.rows[0].s})`);
          stats.retried++;
          seenAttempts.set(id, attempt);
          continue;
        } else if (isPermanent(i)) {
          const f = await worker.query(
            'SELECT queue_engine.fail($1, $2::jsonb, attempt => $3, permanent => true) AS s',
            [id, JSON.stringify({ message: 'permanent', i }), attempt]);
          check(f.rows[0].s === 'failed', `fail(permanent) of run ${id} -> failed (got ${f.rows[0].s})`);
          stats.failedPermanent++;
          seenAttempts.set(id, attempt);
          continue;
        }
        if (prev !== undefined && id !== waitRun) {
          check(attempt === prev + 1, `retried run ${id} starts attempt ${prev + 1} (got ${attempt})`);
          // The old attempt is fenced out.
          const old = await worker.query('SELECT queue_engine.heartbeat($1, attempt => $2) AS t', [id, prev]);
          check(old.rows[0].t === null, `heartbeat of run ${id}'s old attempt ${prev} returns NULL`);
          stats.fenced++;
        }
        const c = await worker.query('SELECT queue_engine.complete($1, $2::jsonb, attempt => $3) AS ok',
                                     [id, JSON.stringify({ done: i, by: label }), attempt]);
        check(c.rows[0].ok === true, `complete run ${id} attempt ${attempt}`);
        const again = await worker.query('SELECT queue_engine.complete($1, NULL, attempt => $2) AS ok', [id, attempt]);
        check(again.rows[0].ok === false, `second complete of run ${id} is a no-op`);
        stats.completed++;
        seenAttempts.set(id, attempt);
      }
    }
    check(inTx === false, 'no transaction left open');
    // Through PgBouncer (two server connections used in turn) the worker ran on both.
    if (process.env.QE_VIA_POOLER === '1') check(backends.size >= 2, `worker's statements ran on ${backends.size} server session(s), want 2`);
    check(waitRun !== null && resumedOk, 'the waiting run was resumed by its event and completed');

    // Counts add up: per run, per status, in queue_stats, and check_consistency finds nothing.
    const nPermanent = [...byRun.values()].filter(isPermanent).length;
    const nRetried = [...byRun.values()].filter((i) => isRetried(i) && !isPermanent(i) && i !== WAIT_I).length;
    check(stats.completed === N - nPermanent, `completed ${stats.completed} = ${N - nPermanent}`);
    check(stats.failedPermanent === nPermanent, `failed ${stats.failedPermanent} = ${nPermanent}`);
    check(stats.retried === nRetried, `retried ${stats.retried} = ${nRetried}`);
    const st = await worker.query(
      `SELECT r.status::text AS status, count(*)::int AS n, sum(r.attempt)::int AS attempts
         FROM queue_engine.runs r JOIN queue_engine.queues q USING (queue_id)
        WHERE q.queue = $1 GROUP BY 1 ORDER BY 1`, [queue]);
    const byStatus = Object.fromEntries(st.rows.map((r) => [r.status, r.n]));
    const attempts = st.rows.reduce((a, r) => a + r.attempts, 0);
    check(JSON.stringify(byStatus) === JSON.stringify({ completed: N - nPermanent, failed: nPermanent }),
          `runs by status ${JSON.stringify(byStatus)}`);
    check(attempts === N + nRetried, `attempts ${attempts} = ${N} + ${nRetried} retries (a wait uses none)`);
    check(stats.dequeued === N + nRetried + 1, `dequeued ${stats.dequeued} = runs + retries + 1 resume`);
    const qs = await worker.query(
      'SELECT queued, delayed, executing, waiting FROM queue_engine.queue_stats WHERE queue = $1', [queue]);
    const q0 = qs.rows[0];
    check([q0.queued, q0.delayed, q0.executing, q0.waiting].every((v) => Number(v) === 0), `queue_stats all 0: ${JSON.stringify(q0)}`);
    const cc = await worker.query('SELECT check_name, found FROM queue_engine.check_consistency(false) WHERE found <> 0');
    check(cc.rows.length === 0, `check_consistency(false) finds nothing: ${JSON.stringify(cc.rows)}`);

    console.log(`PASS ${label}: ${N} runs (${stats.keyRepeats} idempotent repeats), ${stats.dequeued} dequeued, ` +
                `${stats.completed} completed, ${stats.retried} retried, ${stats.failedPermanent} failed, ` +
                `${stats.waited} wait/event/resume, ${stats.fenced} fenced calls refused, ` +
                `${stats.namedCalls} named-statement calls, worker on ${backends.size} server session(s), ` +
                `${checks} checks; check_consistency clean`);
  } finally {
    await worker.end().catch(() => {});
    await other.end().catch(() => {});
  }
}

main().catch((e) => {
  console.log(`FAIL ${label}: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
