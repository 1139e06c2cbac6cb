// test/bench/peers/capture.mjs: prints every statement graphile-worker and pg-boss
// issue for the operations peers.sh measures (add one job, add a batch, a worker
// claiming and completing one job, then a batch of them), recorded on pg's
// Client.prototype.query, with their parameters. Use it after upgrading a peer to
// check that peers/gw_*.sql and peers/boss_*.sql still say what the library says.
// peers.sh runs it from the npm directory when BENCH_PEERS_CAPTURE=1; connection
// from PGHOST (socket directory), PGPORT, PGUSER, PGDATABASE. Argument: queue name.
import pg from 'pg';
import { run, makeWorkerUtils } from 'graphile-worker';
import { PgBoss } from 'pg-boss';

const queue = process.argv[2] || 'bench';
const conn = {
  host: process.env.PGHOST,
  port: Number(process.env.PGPORT),
  user: process.env.PGUSER || 'postgres',
  database: process.env.PGDATABASE || 'postgres',
};
let section = null;
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (config, values, callback) {
  if (section) {
    const text = typeof config === 'string' ? config : config?.text;
    const params = Array.isArray(values) ? values : config?.values;
    const name = typeof config === 'object' && config?.name ? ` (prepared as ${config.name})` : '';
    console.log(`-- ${section}${name}\n${text}\n-- parameters: ${JSON.stringify(params ?? [])}\n`);
  }
  return query.call(this, config, values, callback);
};
const until = async (cond) => { while (!cond()) await new Promise((r) => setTimeout(r, 20)); };
const silent = { debug() {}, info() {}, warn() {}, error: console.error };

const pool = new pg.Pool({ ...conn, max: 4 });
pool.on('error', (err) => console.error(err));
pool.on('connect', (client) => client.on('error', (err) => console.error(err)));
const utils = await makeWorkerUtils({ pgPool: pool });
section = 'graphile-worker addJob';
await utils.addJob(queue, { n: 1 });
section = 'graphile-worker addJobs';
await utils.addJobs(Array.from({ length: 12 }, (_, n) => ({ identifier: queue, payload: { n } })));
let done = 0;
const task = async () => { done++; };
section = 'graphile-worker worker (concurrency 1)';
let runner = await run({ pgPool: pool, concurrency: 1, noHandleSignals: true, pollInterval: 100,
  logger: new (await import('graphile-worker')).Logger(() => silent.info), taskList: { [queue]: task } });
await until(() => done >= 2);
await runner.stop();
section = 'graphile-worker worker pool (localQueue.size 10, completeJobBatchDelay 0)';
runner = await run({ pgPool: pool, noHandleSignals: true, pollInterval: 100,
  logger: new (await import('graphile-worker')).Logger(() => silent.info),
  preset: { worker: { concurrentJobs: 10, localQueue: { size: 10 }, completeJobBatchDelay: 0 } },
  taskList: { [queue]: task } });
await until(() => done >= 13);
await runner.stop();
section = null;
await utils.release();

const boss = new PgBoss({ ...conn, max: 4, supervise: false, schedule: false });
boss.on('error', (err) => console.error(err));
await boss.start();
section = 'pg-boss send';
await boss.send(queue, { n: 1 });
section = 'pg-boss insert';
await boss.insert(queue, Array.from({ length: 12 }, (_, n) => ({ data: { n } })));
done = 0;
section = 'pg-boss work (batchSize 1)';
await boss.work(queue, { batchSize: 1, pollingIntervalSeconds: 0.5 }, async (jobs) => { done += jobs.length; });
await until(() => done >= 2);
await boss.offWork(queue, { wait: true });
section = 'pg-boss work (batchSize 10)';
await boss.work(queue, { batchSize: 10, pollingIntervalSeconds: 0.5 }, async (jobs) => { done += jobs.length; });
await until(() => done >= 13);
await boss.offWork(queue, { wait: true });
section = null;
await boss.stop({ graceful: false, wait: true });
await pool.end();
