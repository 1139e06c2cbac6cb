-- 02_enqueue.sql: enqueue() and enqueue_batch() (SPEC "Triggering", "Errors").
BEGIN;
SELECT plan(74);

SELECT queue_engine.create_queue('e1') \gset
SELECT queue_engine.create_queue('e2', tenant => 'acme', max_attempts => 5, ttl => '5 minutes', lease => '2 minutes') \gset
SELECT queue_engine.create_queue('e3', tenant => 'acme') \gset
SELECT queue_engine.create_queue('e4', tenant => 'other') \gset

---------------------------------------------------------------------------
-- Defaults
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('e1') AS d \gset
SELECT queue_engine.enqueue('e1') AS d2 \gset

SELECT is((SELECT ROW(g.run_id, g.queue, g.tenant, g.status, g.attempt, g.max_attempts, g.priority, g.payload)::text
             FROM queue_engine.get_run(:d) g),
          ROW(:d::bigint, 'e1', 'default', 'queued'::queue_engine.run_status, 0, 3, 0, '{}'::jsonb)::text,
          'enqueue defaults: queued, attempt 0, queue max_attempts 3, priority 0, payload {}');
SELECT is((SELECT ROW(g.run_at = now(), g.created_at = now())::text FROM queue_engine.get_run(:d) g),
          ROW(true, true)::text, 'enqueue defaults: run_at and created_at are now()');
SELECT is((SELECT ROW(g.concurrency_key, g.started_at, g.finished_at, g.expires_at, g.lease_expires_at,
                      g.last_error, g.output, g.tags, g.parent_run_id, g.idempotency_key)::text
             FROM queue_engine.get_run(:d) g),
          '(,,,,,,,,,)', 'enqueue defaults: optional fields are NULL');
SELECT cmp_ok(:d2::bigint, '>', :d::bigint, 'a later enqueue gets a higher run id');

-- Queue defaults copied into the run, and per-run overrides.
SELECT queue_engine.enqueue('e2', '{"x": 1}') AS q2 \gset
SELECT is((SELECT ROW(g.tenant, g.max_attempts, g.expires_at)::text FROM queue_engine.get_run(:q2) g),
          ROW('acme', 5, now() + interval '5 minutes')::text,
          'queue max_attempts and ttl are copied into the run');
SELECT is((SELECT lease FROM queue_engine.runs WHERE run_id = :q2), interval '2 minutes',
          'queue lease is copied into the run');
SELECT queue_engine.enqueue('e2', max_attempts => 2, ttl => '1 hour') AS q2o \gset
SELECT is((SELECT ROW(g.max_attempts, g.expires_at)::text FROM queue_engine.get_run(:q2o) g),
          ROW(2, now() + interval '1 hour')::text, 'max_attempts and ttl given to enqueue override the queue''s');
SELECT queue_engine.enqueue('e1', '{"p": true}', concurrency_key => 'cust-1', priority => -7) AS pk \gset
SELECT is((SELECT ROW(g.payload, g.concurrency_key, g.priority)::text FROM queue_engine.get_run(:pk) g),
          ROW('{"p": true}'::jsonb, 'cust-1', -7)::text, 'payload, concurrency_key and priority are stored');

---------------------------------------------------------------------------
-- Delayed runs
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('e1', delay => '10 minutes') AS dl \gset
SELECT is((SELECT ROW(g.status, g.run_at)::text FROM queue_engine.get_run(:dl) g),
          ROW('delayed'::queue_engine.run_status, now() + interval '10 minutes')::text,
          'delay in the future: delayed, run_at = now() + delay');
SELECT queue_engine.enqueue('e1', run_at => now() + interval '1 hour') AS ra \gset
SELECT is((SELECT ROW(g.status, g.run_at)::text FROM queue_engine.get_run(:ra) g),
          ROW('delayed'::queue_engine.run_status, now() + interval '1 hour')::text,
          'run_at in the future: delayed at that moment');
SELECT queue_engine.enqueue('e1', run_at => now() - interval '1 hour') AS rp \gset
SELECT is((SELECT ROW(g.status, g.run_at)::text FROM queue_engine.get_run(:rp) g),
          ROW('queued'::queue_engine.run_status, now() - interval '1 hour')::text,
          'run_at in the past: queued, run_at kept');
SELECT queue_engine.enqueue('e1', delay => '0') AS d0 \gset
SELECT is((SELECT ROW(g.status, g.run_at)::text FROM queue_engine.get_run(:d0) g),
          ROW('queued'::queue_engine.run_status, now())::text, 'delay 0: queued now');

SELECT count(*) AS runs_before_errors FROM queue_engine.runs \gset
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', run_at => now() + interval '1 minute', delay => '1 minute')$$,
                 '22023', 'run_at and delay cannot both be given', 'run_at and delay together is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', delay => '-1 second')$$,
                 '22023', 'delay must not be negative: -00:00:01', 'negative delay is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', run_at => 'infinity')$$,
                 '22023', 'run_at must be finite', 'infinite run_at is an error');
SELECT is((SELECT count(*) FROM queue_engine.runs), :runs_before_errors::bigint, 'failed enqueues made no run');

---------------------------------------------------------------------------
-- TTL
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('e1', delay => '1 hour', ttl => '10 minutes') AS t1 \gset
SELECT is((SELECT g.expires_at FROM queue_engine.get_run(:t1) g), now() + interval '70 minutes',
          'ttl counts from run_at when run_at is later than now');
SELECT queue_engine.enqueue('e1', run_at => now() - interval '1 hour', ttl => '10 minutes') AS t2 \gset
SELECT is((SELECT g.expires_at FROM queue_engine.get_run(:t2) g), now() + interval '10 minutes',
          'ttl counts from now when run_at is in the past');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', ttl => '0')$$,
                 '22023', 'ttl must be a positive interval: 00:00:00', 'zero ttl is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', ttl => '-5 minutes')$$,
                 '22023', 'ttl must be a positive interval: -00:05:00', 'negative ttl is an error');

---------------------------------------------------------------------------
-- Idempotency keys (per tenant)
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('e2', '{"n": 1}', idempotency_key => 'k1') AS i1 \gset
SELECT queue_engine.enqueue('e2', '{"n": 2}', idempotency_key => 'k1') AS i2 \gset
SELECT is(:i2::bigint, :i1::bigint, 'a used idempotency key returns the existing run id');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE idempotency_key = 'k1'), 1,
          'a used idempotency key creates nothing');
SELECT is((SELECT ROW(g.payload, g.idempotency_key)::text FROM queue_engine.get_run(:i1) g),
          ROW('{"n": 1}'::jsonb, 'k1')::text, 'the first run keeps its payload; get_run shows the key');
SELECT is(queue_engine.enqueue('e3', '{"n": 3}', idempotency_key => 'k1'), :i1::bigint,
          'the key is per tenant: another queue of the same tenant gets the same run');
SELECT queue_engine.enqueue('e4', '{"n": 4}', idempotency_key => 'k1') AS i4 \gset
SELECT isnt(:i4::bigint, :i1::bigint, 'the same key in another tenant makes a new run');
SELECT is((SELECT ROW(g.tenant, g.payload)::text FROM queue_engine.get_run(:i4) g),
          ROW('other', '{"n": 4}'::jsonb)::text, 'the other tenant''s run is its own');
SELECT is((SELECT k.expires_at FROM queue_engine.idempotency_keys k
             JOIN queue_engine.tenants t USING (tenant_id) WHERE t.tenant = 'acme' AND k.idempotency_key = 'k1'),
          now() + interval '1 day', 'idempotency_ttl defaults to 1 day');
SELECT queue_engine.enqueue('e1', idempotency_key => 'k2', idempotency_ttl => '2 hours') AS k2 \gset
SELECT is((SELECT k.expires_at FROM queue_engine.idempotency_keys k WHERE k.idempotency_key = 'k2'),
          now() + interval '2 hours', 'idempotency_ttl sets the key''s lifetime');

-- A key stays live while its run is finished, until its ttl passes.
SELECT queue_engine.cancel(:i1) \gset
SELECT is(queue_engine.enqueue('e2', '{"n": 5}', idempotency_key => 'k1'), :i1::bigint,
          'a live key still deduplicates after its run was canceled');

-- Expire the key: the next enqueue makes a new run.
UPDATE queue_engine.idempotency_keys SET expires_at = now() - interval '1 second'
 WHERE idempotency_key = 'k1' AND tenant_id = (SELECT tenant_id FROM queue_engine.tenants WHERE tenant = 'acme');
SELECT queue_engine.enqueue('e2', '{"n": 6}', idempotency_key => 'k1') AS i6 \gset
SELECT isnt(:i6::bigint, :i1::bigint, 'after the key expired, the same key makes a new run');
SELECT is((SELECT ROW(g.status, g.payload, g.idempotency_key)::text FROM queue_engine.get_run(:i6) g),
          ROW('queued'::queue_engine.run_status, '{"n": 6}'::jsonb, 'k1')::text, 'the new run is a real queued run');
SELECT is(queue_engine.enqueue('e2', '{"n": 7}', idempotency_key => 'k1'), :i6::bigint,
          'the renewed key now returns the new run');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE idempotency_key = 'k1' AND tenant_id =
            (SELECT tenant_id FROM queue_engine.tenants WHERE tenant = 'acme')), 2,
          'exactly two runs were made with key k1 in tenant acme');

SELECT throws_ok($$SELECT queue_engine.enqueue('e1', idempotency_key => 'k3', idempotency_ttl => '0')$$,
                 '22023', 'idempotency_ttl must be a positive interval: 00:00:00', 'zero idempotency_ttl is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', idempotency_key => 'k3', idempotency_ttl => NULL)$$,
                 '22004', 'idempotency_ttl must not be null', 'NULL idempotency_ttl with a key is an error');
SELECT is((SELECT count(*)::int FROM queue_engine.idempotency_keys WHERE idempotency_key = 'k3'), 0,
          'failed enqueues claimed no key');

---------------------------------------------------------------------------
-- enqueue_batch
---------------------------------------------------------------------------
CREATE TEMP TABLE b1 AS
SELECT b.id, b.ord FROM queue_engine.enqueue_batch('e1', ARRAY['{"i": 1}', '{"i": 2}', '{"i": 3}']::jsonb[])
       WITH ORDINALITY AS b(id, ord);
SELECT is((SELECT count(DISTINCT id)::int FROM b1), 3, 'enqueue_batch: one run per element');
SELECT is((SELECT array_agg(r.payload->>'i' ORDER BY b1.ord) FROM b1 JOIN queue_engine.runs r ON r.run_id = b1.id),
          ARRAY['1', '2', '3'], 'enqueue_batch: ids are returned in array order');
SELECT is((SELECT array_agg(id ORDER BY ord) = array_agg(id ORDER BY id) FROM b1), true,
          'enqueue_batch: ids ascend in array order');
SELECT is((SELECT count(*)::int FROM b1 JOIN queue_engine.runs r ON r.run_id = b1.id
            WHERE r.status = 'queued' AND r.attempt = 0 AND r.max_attempts = 3 AND r.created_at = now()), 3,
          'enqueue_batch: runs are queued with the queue''s defaults');

CREATE TEMP TABLE b2 AS
SELECT b.id FROM queue_engine.enqueue_batch('e2', ARRAY['{}', '{}']::jsonb[], concurrency_key => 'ck', priority => 7,
                                            delay => '1 minute', max_attempts => 4, tags => ARRAY['t1'],
                                            parent_run_id => :d) AS b(id);
SELECT is((SELECT count(*)::int FROM b2 JOIN queue_engine.runs r ON r.run_id = b2.id
            WHERE r.status = 'delayed' AND r.run_at = now() + interval '1 minute' AND r.concurrency_key = 'ck'
              AND r.priority = 7 AND r.max_attempts = 4 AND r.tags = ARRAY['t1'] AND r.parent_run_id = :d
              AND r.expires_at = now() + interval '1 minute' + interval '5 minutes'), 2,
          'enqueue_batch: options apply to every run');

CREATE TEMP TABLE b3 AS
SELECT b.id, b.ord FROM queue_engine.enqueue_batch('e1',
         (SELECT array_agg(jsonb_build_object('i', g) ORDER BY g) FROM generate_series(1, 1000) g))
       WITH ORDINALITY AS b(id, ord);
SELECT is((SELECT count(*)::int FROM b3 JOIN queue_engine.runs r ON r.run_id = b3.id
            WHERE (r.payload->>'i')::int = b3.ord), 1000,
          'enqueue_batch of 1000: one run per element, every id in array order');
SELECT is((SELECT count(*)::int FROM queue_engine.enqueue_batch('e1', ARRAY[]::jsonb[])), 0,
          'enqueue_batch of an empty array makes nothing');

SELECT count(*) AS runs_before_batch_errors FROM queue_engine.runs \gset
SELECT throws_ok($$SELECT * FROM queue_engine.enqueue_batch('e1', ARRAY['{}', NULL]::jsonb[])$$,
                 '22004', 'payloads[2] must not be null', 'a NULL payload element is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.enqueue_batch('nope', ARRAY['{}']::jsonb[])$$,
                 '42704', 'queue "nope" does not exist', 'enqueue_batch to an unknown queue is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.enqueue_batch('e1', ARRAY['{}']::jsonb[], run_at => now(), delay => '1 second')$$,
                 '22023', 'run_at and delay cannot both be given', 'enqueue_batch: run_at and delay together is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.enqueue_batch('e1', NULL)$$,
                 '22004', 'payloads must not be null', 'enqueue_batch: NULL payloads is an error');
SELECT throws_ok($$SELECT * FROM queue_engine.enqueue_batch('e1', ARRAY['{}']::jsonb[], parent_run_id => 987654321)$$,
                 'P0002', 'parent run 987654321 does not exist', 'enqueue_batch: unknown parent is an error');
SELECT is((SELECT count(*) FROM queue_engine.runs), :runs_before_batch_errors::bigint,
          'failed enqueue_batch calls made no run');

---------------------------------------------------------------------------
-- Payload size limit
---------------------------------------------------------------------------
SELECT '{"data": "' || repeat('x', 200) || '"}' AS bigp \gset
SELECT pg_column_size(:'bigp'::jsonb) AS bigsz \gset
SELECT set_config('queue_engine.max_payload_bytes', :'bigsz', true) \gset
SELECT lives_ok(format('SELECT queue_engine.enqueue(%L, %L::jsonb)', 'e1', :'bigp'),
                'a payload of exactly max_payload_bytes is accepted');
SELECT set_config('queue_engine.max_payload_bytes', (:bigsz - 1)::text, true) \gset
SELECT throws_ok(format('SELECT queue_engine.enqueue(%L, %L::jsonb)', 'e1', :'bigp'), '54000',
                 format('payload of %s bytes exceeds queue_engine.max_payload_bytes (%s bytes)', :bigsz, :bigsz - 1),
                 'a payload over max_payload_bytes is refused');
SELECT throws_ok(format('SELECT * FROM queue_engine.enqueue_batch(%L, ARRAY[%L, %L]::jsonb[])', 'e1', '{}', :'bigp'), '54000',
                 format('payloads[2] of %s bytes exceeds queue_engine.max_payload_bytes (%s bytes)', :bigsz, :bigsz - 1),
                 'enqueue_batch refuses an element over max_payload_bytes');
SELECT is((SELECT count(*)::int FROM queue_engine.runs WHERE payload ? 'data'), 1,
          'only the payload within the limit was stored');
SET LOCAL queue_engine.max_payload_bytes = 1;
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', '{}')$$, '54000',
                 format('payload of %s bytes exceeds queue_engine.max_payload_bytes (1 bytes)', pg_column_size('{}'::jsonb)),
                 'the limit is measured on the stored jsonb');
RESET queue_engine.max_payload_bytes;

---------------------------------------------------------------------------
-- Tags and parent runs
---------------------------------------------------------------------------
SELECT queue_engine.enqueue('e1', tags => ARRAY['a', 'b'], parent_run_id => :d) AS child \gset
SELECT is((SELECT ROW(g.tags, g.parent_run_id)::text FROM queue_engine.get_run(:child) g),
          ROW(ARRAY['a', 'b'], :d::bigint)::text, 'tags and parent_run_id are stored');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', parent_run_id => 987654321)$$,
                 'P0002', 'parent run 987654321 does not exist', 'an unknown parent run is an error');

---------------------------------------------------------------------------
-- Bad input
---------------------------------------------------------------------------
SELECT throws_ok($$SELECT queue_engine.enqueue('nope')$$,
                 '42704', 'queue "nope" does not exist', 'enqueue to an unknown queue is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue(NULL)$$,
                 '22004', 'queue must not be null', 'NULL queue is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', NULL)$$,
                 '22004', 'payload must not be null', 'NULL payload is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', priority => NULL)$$,
                 '22004', 'priority must not be null', 'NULL priority is an error');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', max_attempts => 0)$$,
                 '22023', 'max_attempts must be positive: 0', 'zero max_attempts is an error');

-- A dropped queue takes no runs.
SELECT queue_engine.create_queue('e5') \gset
SELECT queue_engine.drop_queue('e5') \gset
SELECT throws_ok($$SELECT queue_engine.enqueue('e5')$$,
                 '42704', 'queue "e5" does not exist', 'enqueue to a dropped queue is an error');

-- A paused queue accepts runs.
SELECT queue_engine.pause_queue('e3') \gset
SELECT queue_engine.enqueue('e3') AS paused_run \gset
SELECT is((SELECT g.status FROM queue_engine.get_run(:paused_run) g), 'queued'::queue_engine.run_status,
          'a paused queue accepts runs');

---------------------------------------------------------------------------
-- Counts follow the runs
---------------------------------------------------------------------------
SELECT is((SELECT array_agg(ROW(s.queue, s.queued, s.delayed, s.executing)::text ORDER BY s.queue) FROM queue_engine.queue_stats s),
          (SELECT array_agg(x.r ORDER BY x.queue) FROM
             (SELECT q.queue, ROW(q.queue,
                                  count(r.*) FILTER (WHERE r.status = 'queued'),
                                  count(r.*) FILTER (WHERE r.status = 'delayed'),
                                  count(r.*) FILTER (WHERE r.status = 'executing'))::text AS r
                FROM queue_engine.queues q LEFT JOIN queue_engine.runs r ON r.queue_id = q.queue_id
               WHERE q.dropped_at IS NULL GROUP BY q.queue) x),
          'queue_stats counts equal the runs after every enqueue above');
SELECT is((SELECT ROW(s.queued, s.delayed)::text FROM queue_engine.queue_stats s WHERE s.queue = 'e2'),
          ROW(3::bigint, 2::bigint)::text,
          'e2: 3 queued (q2, q2o, the k1 rerun), 2 delayed (batch); deduplicated enqueues counted nothing');

---------------------------------------------------------------------------
-- Runs are written by heap insert plus index entries into the current
-- segment of ready or delayed: every index holds exactly the rows it should
-- (amcheck reads the heap back against each btree of every run table; the
-- run_id BRINs have no amcheck).
---------------------------------------------------------------------------
CREATE EXTENSION IF NOT EXISTS amcheck;
SELECT count(*) FROM queue_engine.enqueue_batch('e1', array_fill('{"b": 1}'::jsonb, ARRAY[500]), concurrency_key => 'k') \gset
SELECT count(*) FROM queue_engine.enqueue_batch('e2', array_fill('{"b": 2}'::jsonb, ARRAY[500]), delay => '1 hour') \gset
SELECT queue_engine.enqueue('e1', to_jsonb(repeat('x', 300000))) AS big \gset
SELECT lives_ok($$SELECT bt_index_check(i.indexrelid, true)
                    FROM pg_index i
                    JOIN pg_class c ON c.oid = i.indexrelid
                    JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
                   WHERE i.indrelid IN ('queue_engine.ready_0'::regclass, 'queue_engine.ready_1'::regclass,
                                        'queue_engine.delayed_0'::regclass, 'queue_engine.delayed_1'::regclass,
                                        'queue_engine.executing_0'::regclass, 'queue_engine.executing_1'::regclass,
                                        'queue_engine.finished_runs'::regclass)$$,
                'every btree index of the run tables passes bt_index_check(heapallindexed) after direct inserts');
SELECT is((SELECT length(payload::text) FROM queue_engine.runs WHERE run_id = :big), 300002,
          'a payload too big for a page is stored whole (toasted)');

-- An insert trigger someone adds to the tables enqueue writes (the ready
-- and delayed segments; triggers are not inherited, so on each) still
-- fires: enqueue then uses INSERT.
CREATE TEMP TABLE inserted_runs (run_id bigint);
CREATE FUNCTION pg_temp.log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO inserted_runs VALUES (NEW.run_id);
	RETURN NEW;
END $$;
CREATE TRIGGER runs_log_insert AFTER INSERT ON queue_engine.ready_0
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_insert();
CREATE TRIGGER runs_log_insert AFTER INSERT ON queue_engine.ready_1
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_insert();
CREATE TRIGGER runs_log_insert AFTER INSERT ON queue_engine.delayed_0
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_insert();
CREATE TRIGGER runs_log_insert AFTER INSERT ON queue_engine.delayed_1
	FOR EACH ROW EXECUTE FUNCTION pg_temp.log_insert();
SELECT queue_engine.enqueue('e1', '{"t": 1}') AS t1 \gset
SELECT array_agg(id ORDER BY id) AS tb FROM queue_engine.enqueue_batch('e1', ARRAY['{"t": 2}', '{"t": 3}']::jsonb[]) AS id \gset
SELECT queue_engine.enqueue('e1', '{"t": 5}', delay => '1 hour') AS t5 \gset
SELECT is((SELECT array_agg(run_id ORDER BY run_id) FROM inserted_runs),
          (SELECT array_agg(x ORDER BY x) FROM unnest(:'tb'::bigint[] || :t1::bigint || :t5::bigint) x),
          'an insert trigger on the ready and delayed segments fires for enqueue and enqueue_batch, queued and delayed');
SELECT is((SELECT ROW(g.status, g.payload)::text FROM queue_engine.get_run(:t1) g),
          ROW('queued'::queue_engine.run_status, '{"t": 1}'::jsonb)::text, 'and the run is stored the same');
DROP TRIGGER runs_log_insert ON queue_engine.ready_0;
DROP TRIGGER runs_log_insert ON queue_engine.ready_1;
DROP TRIGGER runs_log_insert ON queue_engine.delayed_0;
DROP TRIGGER runs_log_insert ON queue_engine.delayed_1;
SELECT queue_engine.enqueue('e1', '{"t": 4}') AS t4 \gset
SELECT is((SELECT count(*)::int FROM inserted_runs), 4, 'once the trigger is gone, enqueue no longer fires it');
SELECT is((SELECT payload FROM queue_engine.runs WHERE run_id = :t4), '{"t": 4}'::jsonb, 'and stores runs directly again');

-- A CHECK constraint someone adds to ready and delayed (inherited by their
-- segments) is enforced too (INSERT fallback).
ALTER TABLE queue_engine.ready ADD CONSTRAINT runs_priority_cap CHECK (priority < 100);
ALTER TABLE queue_engine.delayed ADD CONSTRAINT runs_priority_cap CHECK (priority < 100);
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', '{}', priority => 200)$$, '23514', NULL,
                 'a CHECK constraint added to ready rejects an enqueue that breaks it');
SELECT throws_ok($$SELECT queue_engine.enqueue('e1', '{}', priority => 200, delay => '1 hour')$$, '23514', NULL,
                 'a CHECK constraint added to delayed rejects a delayed enqueue that breaks it');
SELECT is((SELECT count(*)::int FROM queue_engine.enqueue_batch('e1', ARRAY['{"c": 1}', '{"c": 2}']::jsonb[], priority => 5)), 2,
          'and lets the others through');
ALTER TABLE queue_engine.ready DROP CONSTRAINT runs_priority_cap;
ALTER TABLE queue_engine.delayed DROP CONSTRAINT runs_priority_cap;

SELECT * FROM finish();
ROLLBACK;
