// test/bench/peers/schema.mjs: lets each peer create its own schema with its own
// migration code (graphile-worker's runMigrations; pg-boss's start(), which
// installs its schema, then createQueue), so that the bench measures their SQL
// against the tables, indexes and functions they really make. peers.sh copies
// this file next to the node_modules it installed and runs it there, with the
// cluster in PGHOST (socket directory), PGPORT, PGUSER and PGDATABASE.
// Argument: the queue name (the bench's 'bench'). Prints nothing on success.
import pg from 'pg';
import { runMigrations } from 'graphile-worker';
import { PgBoss } from 'pg-boss';

const queue = process.argv[2] || 'bench';
const conn = {
  host: process.env.PGHOST,
  port: Number(process.env.PGPORT),
  user: process.env.PGUSER || 'postgres',
  database: process.env.PGDATABASE || 'postgres',
};

const pool = new pg.Pool({ ...conn, max: 2 });
pool.on('error', (err) => { console.error(err); process.exitCode = 1; });
pool.on('connect', (client) => client.on('error', (err) => { console.error(err); process.exitCode = 1; }));
await runMigrations({ pgPool: pool, logger: undefined });
await pool.end();

// supervise/schedule off: nothing of pg-boss keeps running once we stop it.
const boss = new PgBoss({ ...conn, max: 2, supervise: false, schedule: false });
boss.on('error', (err) => { console.error(err); process.exitCode = 1; });
await boss.start();
if (!(await boss.getQueue(queue))) await boss.createQueue(queue);
await boss.stop({ graceful: false, wait: true });
