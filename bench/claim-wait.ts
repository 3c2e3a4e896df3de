// How soon the delivery API's waiting claims (ClaimRequest.wait) get a text, and
// what their wake-ups cost the database. Two servers in this process on one
// embedded PostgreSQL (as two servers behind a load balancer), an SMS
// organization, and workers that claim with `wait` and ack what they get.
//   node bench/claim-wait.ts [sends=300] [workers=4] [rate=200] [seconds=10]
// 1. One send at a time, one worker waiting on the sending server, then on the
//    other (NOTIFY): the time from the send's answer to the claim's.
// 2. Sends paced at `rate` per second for `seconds`, `workers` waiting (half on
//    each server): each text's lag from its send's statement (created_at) to its
//    ack (updated_at), and the statements claims ran per text (pg_stat_statements).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { createCodegateNodeClients, DeliveryChannel, IdentityState } from "../clients/ts/src/node.ts";
import { loadConfig } from "../src/config/config.ts";
import { createLogger } from "../src/lib/log.ts";
import { startApp, type App } from "../src/server/app.ts";
import { benchAdminToken, benchDeployment } from "./deployment.ts";
import { startPostgres } from "./postgres.ts";

const [SENDS, WORKERS, RATE, SECONDS] = [300, 4, 200, 10].map((d, i) => Number(process.argv[2 + i] ?? d));
const ADMIN_TOKEN = benchAdminToken();
// One deployment, two servers: the same keys on both.
const DEPLOYMENT = benchDeployment();
const dir = mkdtempSync(join(tmpdir(), "codegate-claim-wait-"));
const { db, url } = await startPostgres(dir, ["-c", "shared_preload_libraries=pg_stat_statements"]);
const sql = new pg.Client({ connectionString: url });
await sql.connect();
await sql.query("create extension if not exists pg_stat_statements");

async function server(): Promise<App> {
  const config = loadConfig({
    ...DEPLOYMENT,
    HOST: "127.0.0.1",
    PORT: "0",
    OPS_PORT: "0",
    DATA_DIR: mkdtempSync(join(dir, "data-")),
    DATABASE_URL: url,
    ADMIN_TOKEN,
    COURIER_ENABLED: "false",
    LOG_LEVEL: "warn",
    RATE_LIMIT_SEND_PER_USERNAME: "1000/1s",
    RATE_LIMIT_SEND_PER_ADDRESS: "off",
    MAX_GUESS_CHANCE: "1",
  });
  return startApp(config, { log: createLogger("warn"), retention: false });
}
const servers = [await server(), await server()];
const clients = servers.map((s) => createCodegateNodeClients({ baseUrl: s.url, adminToken: ADMIN_TOKEN }));
const [a] = clients;

const { organization } = await a.admin.createOrganization({ name: "Bench SMS", settings: { delivery: { login: DeliveryChannel.SMS } } });
const orgId = organization!.id;
const users = Array.from({ length: 200 }, (_, i) => ({ username: `sms${i}@bench.test`, phoneNumber: `+4179${String(1_000_000 + i).slice(1)}0` }));
for (const u of users) {
  const { identity } = await a.admin.createIdentity({ orgId, ...u, skipRegistrationCode: true });
  await a.admin.setIdentityState({ identityId: identity!.id, state: IdentityState.ACTIVE });
}
const send = (i: number, via = a) => via.login.sendLoginCode({ orgId, username: users[i % users.length].username });
const ack = (via: typeof a, messages: { id: string; orgId: string; leaseToken: string }[]) =>
  messages.length ? via.delivery.ack({ messages: messages.map(({ id, orgId, leaseToken }) => ({ id, orgId, leaseToken })) }) : undefined;
const WAIT = durationFromMs(20_000);
const pct = (xs: number[], q: number) => xs[Math.min(xs.length - 1, Math.floor(q * xs.length))];
const fmt = (xs: number[]) => {
  xs.sort((x, y) => x - y);
  return `p50 ${pct(xs, 0.5).toFixed(1)} ms, p90 ${pct(xs, 0.9).toFixed(1)}, p99 ${pct(xs, 0.99).toFixed(1)}, max ${xs.at(-1)!.toFixed(1)} (n=${xs.length})`;
};

// ---- 1. One at a time.
for (const [label, k] of [["worker on the sending server", 0], ["worker on the other server (NOTIFY)", 1]] as const) {
  const lags: number[] = [];
  for (let i = 0; i < SENDS; i++) {
    const claimed = clients[k].delivery.claim({ channels: [DeliveryChannel.SMS], wait: WAIT });
    while (servers[k].deliveryWaits.waiting < 1) await sleep(1);
    await send(i);
    const t0 = performance.now();
    const { messages } = await claimed;
    lags.push(performance.now() - t0);
    await ack(clients[k], messages);
  }
  console.log(`one at a time, ${label}: from the send's answer to the claim's answer: ${fmt(lags)}`);
}

// ---- 2. Paced sends, several workers.
await sql.query("select pg_stat_statements_reset()");
let running = true;
const workers = Array.from({ length: WORKERS }, async (_, w) => {
  const via = clients[w % 2];
  while (running) {
    const { messages } = await via.delivery.claim({ channels: [DeliveryChannel.SMS], maxMessages: 100, wait: WAIT });
    await ack(via, messages);
  }
});
while (servers.reduce((n, s) => n + s.deliveryWaits.waiting, 0) < WORKERS) await sleep(1);
const { rows: [{ since }] } = await sql.query<{ since: Date }>("select now() as since");
const total = RATE * SECONDS;
const started = performance.now();
const inFlight: Promise<unknown>[] = [];
for (let i = 0; i < total; i++) {
  const due = started + (i * 1000) / RATE;
  const wait = due - performance.now();
  if (wait > 0) await sleep(wait);
  inFlight.push(send(i, clients[i % 2]));
}
await Promise.all(inFlight);
const sentPerSecond = total / ((performance.now() - started) / 1000);
for (;;) {
  const { rows: [{ n }] } = await sql.query<{ n: number }>("select count(*)::int n from courier_message where channel = 'sms' and status = 'queued'");
  if (n === 0) break;
  await sleep(50);
}
const { rows } = await sql.query<{ ms: number }>(
  "select extract(epoch from updated_at - created_at) * 1000 as ms from courier_message where channel = 'sms' and status = 'sent' and created_at >= $1",
  [since],
);
// The delivery API's look for organizations with due texts, and its claim in one (store/delivery.ts); the courier is off.
const { rows: statements } = await sql.query<{ calls: string; query: string }>("select calls::text, query from pg_stat_statements where query ~ 'courier_message'");
const calls = (re: RegExp) => statements.filter((s) => re.test(s.query)).reduce((n, s) => n + Number(s.calls), 0);
const looks = calls(/^\s*select org_id from courier_message/);
const claims = calls(/\), claimed as \(\s+update courier_message m set/);
console.log(
  `${WORKERS} workers waiting (half on each server), sends paced at ${RATE}/s for ${SECONDS} s (sent ${sentPerSecond.toFixed(0)}/s): ` +
    `lag from the send's statement to the ack: ${fmt(rows.map((r) => Number(r.ms)))}; ` +
    `per text, ${(looks / rows.length).toFixed(2)} looks for due messages and ${(claims / rows.length).toFixed(2)} claim statements`,
);

running = false;
for (const s of servers) await s.deliveryWaits.stop();
await Promise.all(workers);
for (const c of clients) c.close();
for (const s of servers) await s.close();
await sql.end();
await db.stop();
