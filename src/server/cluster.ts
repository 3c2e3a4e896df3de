// `serve` on every core: a primary process forks WORKERS API workers, which share
// the listening port (node:cluster hands connections round-robin), and one courier
// worker; it runs the migrations first, serves the operations listener (metrics
// summed over the workers, readiness asked of each), restarts a worker that dies,
// and on SIGTERM stops them all gracefully.
//
// Workers are told their role by the environment (CODEGATE_WORKER) and talk to the
// primary over the cluster's IPC channel: they say when they listen, answer
// readiness, take the TLS session ticket keys the primary draws and rotates, and
// stop on request or when the primary goes away.
import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, Counter, Registry } from "prom-client";
import type { Config } from "../config/config.ts";
import { COURIER_NODE_FLAGS } from "../config/node-flags.ts";
import type { Logger } from "../lib/log.ts";
import { openMigrated } from "../store/orm.ts";
import { sendJson } from "./http-routes.ts";
import type { Readiness } from "./ops/health.ts";
import { startOpsListener, type OpsListener } from "./ops/ops.ts";
import { givenTicketKeys, rotatingTicketKeys, type SettableTicketKeys, type TicketKeys } from "./ticket-keys.ts";

export type WorkerRole = "api" | "courier";
export const WORKER_ROLE_ENV = "CODEGATE_WORKER";

/** Messages between the primary and a worker. */
type FromWorker =
  | { codegate: "listening"; port: number }
  | { codegate: "readiness"; id: number; readiness: Readiness }
  | { codegate: "ticket-keys?" };
type ToWorker =
  | { codegate: "shutdown" }
  | { codegate: "readiness"; id: number }
  /** The API workers' TLS session ticket keys (base64): at a worker's asking, and to all at each rotation. */
  | { codegate: "ticket-keys"; keys: string };

const isMessage = (m: unknown): m is { codegate: string } => typeof m === "object" && m !== null && "codegate" in m;

/** A worker that dies this soon after the one before is a crash loop: the primary gives up. */
const CRASH_WINDOW_MS = 60_000;
const MAX_CRASHES_IN_WINDOW = 5;
const RESTART_DELAY_MS = 1_000;
/** How long a worker gets to answer a readiness question. */
const READINESS_TIMEOUT_MS = 2_000;

/** How long an API worker waits for the primary's ticket keys before its start fails. */
const TICKET_KEYS_TIMEOUT_MS = 10_000;

/**
 * An API worker's TLS session ticket keys: asked of the primary before the worker listens, then
 * replaced by each rotation's. Over IPC rather than in the environment, whose copy at the start
 * the kernel keeps for the process's life (/proc/<pid>/environ): rotated keys must be forgotten.
 */
export function ticketKeysFromPrimary(): Promise<TicketKeys> {
  return new Promise((resolve, reject) => {
    let keys: SettableTicketKeys | undefined;
    const onMessage = (m: ToWorker) => {
      if (!isMessage(m) || m.codegate !== "ticket-keys") return;
      const next = Buffer.from(m.keys, "base64");
      if (keys) return keys.set(next);
      clearTimeout(late);
      resolve((keys = givenTicketKeys(next)));
    };
    const late = setTimeout(() => {
      process.off("message", onMessage);
      reject(new Error(`the primary did not hand over the TLS session ticket keys within ${TICKET_KEYS_TIMEOUT_MS} ms`));
    }, TICKET_KEYS_TIMEOUT_MS);
    process.on("message", onMessage);
    process.send?.({ codegate: "ticket-keys?" } satisfies FromWorker);
  });
}

/** The role of this process when it is a worker of `serve`, else undefined. */
export function workerRole(): WorkerRole | undefined {
  const role = process.env[WORKER_ROLE_ENV];
  return cluster.isWorker && (role === "api" || role === "courier") ? role : undefined;
}

export interface PrimaryResult {
  /** 0 after a graceful stop, 1 when workers kept crashing or did not stop in time. */
  code: number;
}

/**
 * Runs the primary until `stopped` resolves (or workers crash-loop), then stops
 * the workers and answers the exit code.
 */
export async function runPrimary(config: Config, log: Logger, stopped: Promise<unknown>): Promise<PrimaryResult> {
  // Migrations once, here, before any worker opens the database.
  const { orm, applied } = await openMigrated(config);
  if (applied.length) log.info({ migrations: applied }, "applied migrations");
  await orm.close();

  const registry = new Registry();
  const restarts = new Counter({
    name: "codegate_worker_restarts_total",
    help: "Workers of serve that died and were started again, by role.",
    labelNames: ["role"] as const,
    registers: [registry],
  });
  for (const role of ["api", "courier"] as const) restarts.inc({ role }, 0);
  const aggregator = new AggregatorRegistry();

  const roles = new Map<Worker, WorkerRole>();
  const listening = new Map<Worker, number>();
  const apiWorkers = () => [...roles].filter(([, role]) => role === "api").map(([w]) => w);
  let allListening!: () => void;
  const started = new Promise<void>((resolve) => (allListening = resolve));
  const checkStarted = () => {
    const api = apiWorkers();
    if (api.length === config.workers && api.every((w) => listening.has(w))) allListening();
  };
  let stopping = false;
  let crashes: number[] = [];
  let giveUp!: () => void;
  const crashLoop = new Promise<void>((resolve) => (giveUp = resolve));

  // One set for all API workers, so that a session resumes on any; rotated here, and each new set sent to all.
  const ticketKeys = config.tls ? rotatingTicketKeys(config.tls.ticketKeyRotationMs) : undefined;
  const keysMessage = (keys: Buffer): ToWorker => ({ codegate: "ticket-keys", keys: keys.toString("base64") });
  ticketKeys?.onChange((keys) => {
    for (const worker of apiWorkers()) send(worker, keysMessage(keys));
  });
  const fork = (role: WorkerRole) => {
    cluster.setupPrimary({ execArgv: role === "courier" ? [...process.execArgv, ...COURIER_NODE_FLAGS] : process.execArgv });
    const worker = cluster.fork({ [WORKER_ROLE_ENV]: role });
    roles.set(worker, role);
    worker.on("message", (m: FromWorker) => {
      if (!isMessage(m)) return;
      if (m.codegate === "ticket-keys?" && role === "api" && ticketKeys) send(worker, keysMessage(ticketKeys.current()));
      if (m.codegate !== "listening") return;
      listening.set(worker, m.port);
      checkStarted();
    });
    worker.once("exit", (code, signal) => {
      roles.delete(worker);
      listening.delete(worker);
      if (stopping) return;
      // Not `role` (the primary's log has its own) nor `code` (redacted in every line: a one-time code's name).
      log.error({ workerRole: role, pid: worker.process.pid, exitCode: code, signal }, "worker died; starting another");
      restarts.inc({ role });
      const now = Date.now();
      crashes = [...crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
      if (crashes.length > MAX_CRASHES_IN_WINDOW) {
        log.error({ crashes: crashes.length, windowMs: CRASH_WINDOW_MS }, "workers keep dying; stopping");
        giveUp();
        return;
      }
      setTimeout(() => stopping || fork(role), RESTART_DELAY_MS).unref();
    });
    return worker;
  };

  for (let i = 0; i < config.workers; i++) fork("api");
  if (config.courier.enabled) fork("courier");

  await Promise.race([started, stopped, crashLoop]);
  const port = listening.values().next().value;

  let nextQuestion = 0;
  const ask = (worker: Worker) =>
    new Promise<Readiness>((resolve) => {
      const id = nextQuestion++;
      const notReady: Readiness = { ready: false, body: { status: "not_ready", database: "unavailable", migrations: "unknown" } };
      const timer = setTimeout(() => done(notReady), READINESS_TIMEOUT_MS);
      const onMessage = (m: FromWorker) => {
        if (isMessage(m) && m.codegate === "readiness" && m.id === id) done(m.readiness);
      };
      const done = (r: Readiness) => {
        clearTimeout(timer);
        worker.off("message", onMessage);
        resolve(r);
      };
      worker.on("message", onMessage);
      send(worker, { codegate: "readiness", id });
    });

  let ops: OpsListener | undefined;
  if (port !== undefined) {
    ops = await startOpsListener(
      {
        "GET /readyz": async (_req, res) => {
          const workers = apiWorkers();
          const answers = await Promise.all(workers.map(ask));
          const ready = !stopping && workers.length === config.workers && answers.every((a) => a.ready);
          const body = answers.find((a) => !a.ready)?.body ?? answers[0]?.body ?? { status: "not_ready", database: "unavailable", migrations: "unknown" };
          sendJson(res, ready ? 200 : 503, { ...body, status: stopping ? "shutting_down" : ready ? "ready" : "not_ready", workers: workers.length });
        },
        "GET /metrics": async (_req, res) => {
          // Summed over the workers (counters, histograms, pool gauges); each metric says how.
          const body = `${await aggregator.clusterMetrics()}\n${await registry.metrics()}`;
          res.writeHead(200, { "content-type": aggregator.contentType, "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
          res.end(body);
        },
      },
      { host: config.opsHost, port: config.opsPort, headersTimeoutMs: config.headersTimeoutMs, log },
    );
    log.info({ port, opsPort: ops.port, workers: config.workers, courier: config.courier.enabled, database: "postgresql" }, "listening");
  }

  await Promise.race([stopped, crashLoop]);
  stopping = true;
  ticketKeys?.stop();
  const exits = [...roles.keys()].map((w) => new Promise((resolve) => (w.isDead() ? resolve(undefined) : w.once("exit", resolve))));
  for (const worker of roles.keys()) send(worker, { codegate: "shutdown" });
  // Each worker has the grace to finish its requests, and a little more to close.
  let killed = false;
  const late = setTimeout(() => {
    for (const worker of roles.keys()) {
      killed = true;
      log.error({ role: roles.get(worker), pid: worker.process.pid }, "worker did not stop in time; killing it");
      worker.process.kill("SIGKILL");
    }
  }, config.shutdownGraceMs + 10_000);
  await Promise.all(exits);
  clearTimeout(late);
  await ops?.close();
  return { code: crashes.length > MAX_CRASHES_IN_WINDOW || killed ? 1 : 0 };
}

function send(worker: Worker, message: ToWorker): void {
  if (worker.isConnected()) worker.send(message, () => {});
}

/** A worker's metrics, for the primary to sum (prom-client answers its requests once an AggregatorRegistry exists here). */
export function reportMetricsToPrimary(registry: Registry): void {
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([registry]);
}

/** A worker's side: tells the primary it listens, answers readiness, and resolves when told to stop or when the primary is gone. */
export function workerChannel(opts: { port?: number; readiness?: () => Promise<Readiness> }): { stopped: Promise<void> } {
  if (opts.port !== undefined) process.send?.({ codegate: "listening", port: opts.port } satisfies FromWorker);
  const stopped = new Promise<void>((resolve) => {
    process.on("message", (m: ToWorker) => {
      if (!isMessage(m)) return;
      if (m.codegate === "shutdown") resolve();
      else if (m.codegate === "readiness" && opts.readiness) {
        void opts.readiness().then((readiness) => process.send?.({ codegate: "readiness", id: m.id, readiness } satisfies FromWorker));
      }
    });
    // The primary died (or was killed): nothing will tell this worker to stop.
    process.once("disconnect", () => resolve());
  });
  return { stopped };
}
