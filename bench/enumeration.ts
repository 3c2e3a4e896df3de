// Does the answer of a public send tell whether an account exists? Starts a real
// PostgreSQL and the server as in production (courier on, mail to an SMTP sink),
// then times SendLoginCode for known and unknown usernames, interleaved at random,
// one request at a time, and prints both distributions.
//
//   npm run bench:enumeration            (CALLS=300 per kind by default)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { freePort, startPostgres } from "./postgres.ts";
import { SMTPServer } from "smtp-server";

const CALLS = Number(process.env.CALLS ?? 300);
const WARMUP = 60;

const dir = mkdtempSync(join(tmpdir(), "codegate-enum-"));
const { db, url: databaseUrl } = await startPostgres(dir);

let mails = 0;
const smtpPort = await freePort();
const smtp = new SMTPServer({ authOptional: true, disabledCommands: ["STARTTLS"], logger: false, onData: (s, _x, cb) => (s.resume(), s.on("end", () => (mails++, cb()))) });
await new Promise<void>((r) => smtp.listen(smtpPort, "127.0.0.1", () => r()));

const port = await freePort();
const adminToken = randomBytes(16).toString("hex");
const server = spawn(process.execPath, ["src/main.ts", "serve"], {
  env: {
    ...process.env,
    PORT: String(port),
    HOST: "127.0.0.1",
    DATABASE_URL: databaseUrl,
    SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
    DATA_DIR: join(dir, "data"),
    ADMIN_TOKEN: adminToken,
    LOG_LEVEL: "warn",
    // Each username is sent to once; the address limit would stop a single client.
    RATE_LIMIT_SEND_PER_ADDRESS: "off",
  },
  stdio: ["ignore", "inherit", "inherit"],
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
const org = (await post("/codegate.v1.AdminService/CreateOrganization", { name: "Enumeration" }, { authorization: `Bearer ${adminToken}` })).body.organization.id;

// Known users, inserted directly: the bench is about the send, not about setup.
const client = new pg.Client({ connectionString: databaseUrl });
await client.connect();
const known = Array.from({ length: CALLS + WARMUP }, (_, i) => `known${i}@example.com`);
await client.query(
  `insert into identity (org_id, id, username, username_normalized, state, created_at)
   select $1, gen_random_uuid(), u, u, 'active', now() from unnest($2::text[]) as u`,
  [org, known],
);
await client.end();
const unknown = Array.from({ length: CALLS + WARMUP }, () => `nobody-${randomUUID()}@example.com`);

async function timed(username: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await post("/codegate.v1.LoginService/SendLoginCode", { username, orgId: org });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 200 || r.body.message !== "success") throw new Error(`unexpected answer ${r.status}`);
  return ms;
}

// Interleave at random so that drift (caches, autovacuum, the courier) hits both.
const plan = [...known.map((u) => ["known", u] as const), ...unknown.map((u) => ["unknown", u] as const)].sort(() => Math.random() - 0.5);
const times: Record<"known" | "unknown", number[]> = { known: [], unknown: [] };
let done = 0;
for (const [kind, username] of plan) {
  const ms = await timed(username);
  if (done++ >= 2 * WARMUP) times[kind].push(ms);
}

const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  return { n: s.length, mean, min: s[0], p10: q(s, 0.1), p50: q(s, 0.5), p90: q(s, 0.9), p99: q(s, 0.99), max: s[s.length - 1] };
};
const k = stats(times.known);
const u = stats(times.unknown);
const fmt = (v: number) => v.toFixed(2).padStart(8);
console.log(`\nSendLoginCode answer times (ms), ${CALLS}-ish calls each after ${WARMUP} warm-up each, one at a time, HTTP/1.1 JSON`);
console.log(`${"".padEnd(8)}${["n", "mean", "min", "p10", "p50", "p90", "p99", "max"].map((h) => h.padStart(8)).join("")}`);
for (const [name, s] of [["known", k], ["unknown", u]] as const) {
  console.log(`${name.padEnd(8)}${String(s.n).padStart(8)}${[s.mean, s.min, s.p10, s.p50, s.p90, s.p99, s.max].map(fmt).join("")}`);
}
// Histogram in 0.25 ms buckets around the medians.
const lo = Math.floor(Math.min(k.p10, u.p10) * 4) / 4;
console.log("\nhistogram (share of calls per 0.25 ms bucket)");
for (let b = lo; b < lo + 3; b += 0.25) {
  const share = (xs: number[]) => xs.filter((x) => x >= b && x < b + 0.25).length / xs.length;
  const bar = (f: number) => "#".repeat(Math.round(f * 60)).padEnd(30);
  console.log(`${b.toFixed(2).padStart(6)} known ${bar(share(times.known))} unknown ${bar(share(times.unknown))}`);
}
console.log(`\nmedian difference known - unknown: ${(k.p50 - u.p50).toFixed(3)} ms; mails delivered meanwhile: ${mails}`);

server.kill("SIGTERM");
await new Promise((r) => server.once("exit", r));
await new Promise<void>((r) => smtp.close(() => r()));
await db.stop();
rmSync(dir, { recursive: true, force: true });
