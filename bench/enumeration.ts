// Does the answer of a public call tell whether an account exists? Starts a real
// PostgreSQL and the server as in production (courier on, mail to an SMTP sink),
// then times every public send and verify for usernames of each state (active,
// unknown, pending, disabled; for the verifies also an active one with a live code
// that the guess misses), interleaved at random, one request at a time, and prints
// the medians and the largest difference between states of each call.
//
//   npm run bench:enumeration            (CALLS=200 per call and state by default)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyPairSync, randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { freePort, startPostgres } from "./postgres.ts";
import { spawnServe } from "./serve.ts";
import { SMTPServer } from "smtp-server";

const CALLS = Number(process.env.CALLS ?? 200);
const WARMUP = 20;

const dir = mkdtempSync(join(tmpdir(), "codegate-enum-"));
const { db, url: databaseUrl } = await startPostgres(dir);

let mails = 0;
const smtpPort = await freePort();
const smtp = new SMTPServer({ authOptional: true, disabledCommands: ["STARTTLS"], logger: false, onData: (s, _x, cb) => (s.resume(), s.on("end", () => (mails++, cb()))) });
await new Promise<void>((r) => smtp.listen(smtpPort, "127.0.0.1", () => r()));

const port = await freePort();
const adminToken = randomBytes(24).toString("base64url");
const server = spawnServe(port, {
  DATABASE_URL: databaseUrl,
  SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
  DATA_DIR: join(dir, "data"),
  ADMIN_TOKEN: adminToken,
  PUBLIC_URL: "http://codegate.bench",
  CODE_HMAC_KEYS: `b1:${randomBytes(32).toString("base64")}`,
  MAIL_ENCRYPTION_KEYS: `b1:${randomBytes(32).toString("base64")}`,
  TOKEN_SIGNING_KEY: Buffer.from(generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" })).toString("base64"),
  LOG_LEVEL: "warn",
  // Every request comes from one client: the per-address limits are counted, as in
  // production, but high enough never to stop it.
  RATE_LIMIT_SEND_PER_ADDRESS: "1000000/1m",
  RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "1000000/1m",
});
const base = `http://127.0.0.1:${port}`;
for (let i = 0; ; i++) {
  try {
    if ((await fetch(`${base}/healthz`)).ok) break;
  } catch {}
  if (i > 300) throw new Error("server did not start");
  await new Promise((r) => setTimeout(r, 100));
}

const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
  const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
};
const orgId = (
  await post(
    "/codegate.v1.AdminService/CreateOrganization",
    { name: "Enumeration", settings: { selfServiceSignup: true, notifyUnknownRecovery: true } },
    { authorization: `Bearer ${adminToken}` },
  )
).body.organization.id;

type State = "active" | "active, live code" | "unknown" | "pending" | "disabled";
interface Call {
  name: string;
  path: string;
  verify: boolean;
  /** The purpose whose live code the "active, live code" state gets first. */
  purpose?: "login" | "registration" | "recovery";
}
const S = "/codegate.v1.";
const calls: Call[] = [
  { name: "SendLoginCode", path: `${S}LoginService/SendLoginCode`, verify: false },
  { name: "ResendRegistrationCode", path: `${S}RegistrationService/ResendRegistrationCode`, verify: false },
  { name: "SendRecoveryCode", path: `${S}RecoveryService/SendRecoveryCode`, verify: false },
  { name: "Register", path: `${S}RegistrationService/Register`, verify: false },
  { name: "VerifyLoginCode", path: `${S}LoginService/VerifyLoginCode`, verify: true, purpose: "login" },
  { name: "CompleteRegistration", path: `${S}RegistrationService/CompleteRegistration`, verify: true, purpose: "registration" },
  { name: "VerifyRecoveryCode", path: `${S}RecoveryService/VerifyRecoveryCode`, verify: true, purpose: "recovery" },
];
const statesOf = (c: Call): State[] => (c.verify ? ["active, live code", "active", "unknown", "pending", "disabled"] : ["active", "unknown", "pending", "disabled"]);
const sendPathOf: Record<string, string> = {
  login: `${S}LoginService/SendLoginCode`,
  registration: `${S}RegistrationService/ResendRegistrationCode`,
  recovery: `${S}RecoveryService/SendRecoveryCode`,
};

// Usernames of their own for every call and state (sends are limited per username),
// inserted directly: the bench is about the calls, not about setup.
const client = new pg.Client({ connectionString: databaseUrl });
await client.connect();
const plan: { call: Call; state: State; username: string }[] = [];
for (const call of calls) {
  for (const state of statesOf(call)) {
    const usernames = Array.from({ length: CALLS + WARMUP }, (_, i) => `${call.name.toLowerCase()}-${state.replace(/\W+/g, "")}-${i}-${randomUUID().slice(0, 8)}@example.com`);
    if (state !== "unknown") {
      // A live registration code needs a pending identity; the other live codes an active one.
      const dbState = state === "active, live code" ? (call.purpose === "registration" ? "pending" : "active") : state;
      await client.query(
        `insert into identity (org_id, id, username, username_normalized, state, created_at)
         select $1, gen_random_uuid(), u, u, $3, now() from unnest($2::text[]) as u`,
        [orgId, usernames, dbState],
      );
    }
    if (state === "active, live code") {
      for (const username of usernames) await post(sendPathOf[call.purpose!], { username, orgId });
    }
    for (const username of usernames) plan.push({ call, state, username });
  }
}
await client.end();

async function timed(call: Call, username: string): Promise<number> {
  const body = call.verify ? { username, orgId, code: "000000" } : { username, orgId };
  const t0 = process.hrtime.bigint();
  const r = await post(call.path, body);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const expected = call.verify ? 401 : 200;
  // (A live code of 000000 would be a one-in-a-million right guess: 200.)
  if (r.status !== expected && !(call.verify && r.status === 200)) throw new Error(`${call.name}: unexpected answer ${r.status} ${JSON.stringify(r.body)}`);
  return ms;
}

// Interleave at random so that drift (caches, autovacuum, the courier) hits every state.
plan.sort(() => Math.random() - 0.5);
const times = new Map<string, number[]>();
const seen = new Map<string, number>();
for (const { call, state, username } of plan) {
  const key = `${call.name}|${state}`;
  const ms = await timed(call, username);
  const n = (seen.get(key) ?? 0) + 1;
  seen.set(key, n);
  if (n > WARMUP) times.set(key, [...(times.get(key) ?? []), ms]);
}

/**
 * Mann-Whitney's rank-sum test of `xs` against `ys`, as z: how many standard errors
 * `xs` runs slower (positive) or faster than `ys`. |z| > 3 is a difference an attacker
 * with that many samples tells apart; noise alone stays mostly within ±2.
 */
function rankSumZ(xs: number[], ys: number[]): number {
  const all = [...xs.map((v) => ({ v, x: true })), ...ys.map((v) => ({ v, x: false }))].sort((a, b) => a.v - b.v);
  let rankSumX = 0;
  for (let i = 0; i < all.length; ) {
    let j = i;
    while (j < all.length && all[j]!.v === all[i]!.v) j++;
    const rank = (i + 1 + j) / 2; // ties share their mean rank
    for (let k = i; k < j; k++) if (all[k]!.x) rankSumX += rank;
    i = j;
  }
  const [n, m] = [xs.length, ys.length];
  const u = rankSumX - (n * (n + 1)) / 2;
  return (u - (n * m) / 2) / Math.sqrt((n * m * (n + m + 1)) / 12);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.9)];
console.log(`\nanswer times (ms), ${CALLS} calls per call and state after ${WARMUP} warm-up, interleaved, one at a time, HTTP/1.1 JSON`);
console.log("z: Mann-Whitney rank-sum z against the unknown usernames' times (|z| > 3: told apart)");
console.log(`${"call".padEnd(24)}${"state".padEnd(20)}${"p50".padStart(8)}${"p90".padStart(8)}${"z".padStart(8)}`);
for (const call of calls) {
  const medians: number[] = [];
  const unknown = times.get(`${call.name}|unknown`)!;
  for (const state of statesOf(call)) {
    const xs = times.get(`${call.name}|${state}`)!;
    medians.push(median(xs));
    const z = state === "unknown" ? "" : rankSumZ(xs, unknown).toFixed(1);
    console.log(`${call.name.padEnd(24)}${state.padEnd(20)}${median(xs).toFixed(2).padStart(8)}${p90(xs).toFixed(2).padStart(8)}${z.padStart(8)}`);
  }
  console.log(`${"".padEnd(24)}${"largest p50 gap".padEnd(20)}${(Math.max(...medians) - Math.min(...medians)).toFixed(3).padStart(8)}\n`);
}
console.log(`mails delivered meanwhile: ${mails}`);

server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));
await new Promise<void>((r) => smtp.close(() => r()));
await db.stop();
rmSync(dir, { recursive: true, force: true });
