// The raw-transaction ceiling: what one issuance needs at minimum, as one statement
// (one round trip, one commit): mark the earlier live login code dead, insert the new
// code and its queued mail, with time-ordered ids as the server's. A pg.Pool of
// <connections>, <connections> calls in flight.
//   node bench/pg-ceiling.ts <databaseUrl> <identitiesFile> <connections> <seconds>
import { readFileSync } from "node:fs";
import { randomBytes, randomUUIDv7 } from "node:crypto";
import pg from "pg";

const [url, file, connsArg, secondsArg] = process.argv.slice(2);
const conns = Number(connsArg);
const ids = readFileSync(file, "utf8").split("\n").filter(Boolean).map((l) => l.split("\t"));
const pool = new pg.Pool({ connectionString: url, max: conns });
const SQL = {
  name: "bench-issue",
  text: `with dead as (
    update code set dead_at = $4 where org_id = $1 and identity_id = $2::uuid and purpose = 'login' and dead_at is null returning 1
  ), issued as (
    insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, attempts, max_attempts)
    select $1, $3::uuid, $2::uuid, 'login', $5, 'k1', $4, $4::timestamptz + interval '10 minutes', 0, 5
    where (select count(*) from dead) >= 0 -- runs after the update: the live slot is free
    returning 1
  )
  insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select $1, $6::uuid, 'login', $7, 'Your login code', $8, 'k1', 'queued', 0, $4::timestamptz + interval '100 years', $4, $4
  from issued`,
};
// The mail is queued far in the future so that the server's courier leaves it alone
// (the bench deletes these rows afterwards).
// Serialize per identity (as distinct users would): each in-flight call takes the next identity.
let next = 0;
const lat: number[] = [];
let errors = 0;
const start = performance.now();
const deadline = start + Number(secondsArg) * 1000;
const body = randomBytes(400);
async function worker() {
  while (performance.now() < deadline) {
    const [orgId, id, username] = ids[next++ % ids.length];
    const t0 = performance.now();
    try {
      await pool.query({ ...SQL, values: [orgId, id, randomUUIDv7(), new Date(), randomBytes(32), randomUUIDv7(), username, body] });
      lat.push(performance.now() - t0);
    } catch (err) {
      if (errors++ === 0) console.error(String(err));
    }
  }
}
await Promise.all(Array.from({ length: conns }, worker));
const duration = performance.now() - start;
await pool.end();
lat.sort((a, b) => a - b);
const pct = (p: number) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : 0);
console.log("BENCHJSON " + JSON.stringify({
  requests: lat.length + errors, duration_us: Math.round(duration * 1000), p50_us: Math.round(pct(50) * 1000), p99_us: Math.round(pct(99) * 1000),
  s200: lat.length, s401: 0, s429: 0, sother: errors, extra: 0, sock_errors: 0,
}));
