// Prometheus metrics of one server process, served at GET /metrics. Each app has
// a registry of its own (not prom-client's global one), so several servers can
// run in one process, as the tests do.
//
// Labels only ever take values from small fixed sets (service and method names
// of the registered services, status codes, code purposes): never a username, a
// code, a token or anything else a caller chooses.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Clock } from "../../domain/clock.ts";
import { purposes, type Purpose } from "../../domain/purpose.ts";
import { attempt, withTimeout } from "../../lib/abort.ts";
import { retentionOutcomes, type CodeEvents, type CourierEvents, type LimitEvents, type RetentionEvents } from "../../rules/events.ts";
import { queueStats, type QueueStats } from "../../store/outbox.ts";
import { channels, type Channel } from "../../domain/outbox.ts";
import type { Orm } from "../../store/orm.ts";
import { poolStats, type PoolStats } from "../../store/probes.ts";
import type { Sql } from "../../store/sql.ts";
import type { RefusalReason } from "../admission.ts";

export interface MetricsSources {
  /** Queued courier mail: how many, and when the oldest was queued (null when none). */
  courierQueue(): Promise<Record<Channel, QueueStats>>;
  /** The connection pool; undefined when the driver has none (PGlite). */
  pool(): Promise<PoolStats | undefined>;
  now(): Date;
  /** The delivery API's claims waiting for a message now; absent where none is served (the courier worker). */
  waitingClaims?(): number;
}

export type ProcessErrorKind = "unhandled_rejection" | "uncaught_exception";

export interface Metrics {
  registry: Registry;
  /** The rules' events, counted. */
  limits: LimitEvents;
  codes: CodeEvents;
  courier: CourierEvents;
  retention: RetentionEvents;
  /** Counts an error nobody handled (see process-guard.ts). */
  processError(kind: ProcessErrorKind): void;
  /** Counts a connection the listener refused. */
  connectionRefused(reason: RefusalReason): void;
  /** Counts one finished RPC; `code` is a gRPC status name ("OK", "NotFound", …). */
  observeRpc(service: string, method: string, code: string, seconds: number): void;
  /** The Prometheus text exposition of every metric. */
  render(): Promise<{ contentType: string; body: string }>;
}

/** A database that has not answered a scrape's question by then is skipped. */
const SOURCE_TIMEOUT_MS = 2_000;

/**
 * Anything but a known purpose becomes "other": a caller that passes the wrong
 * string by mistake cannot turn a label into a leak or a cardinality bomb.
 */
function purposeLabel(purpose: string): string {
  return (purposes as readonly string[]).includes(purpose) ? purpose : "other";
}


/** One call shared by every gauge of a scrape, rather than one query per gauge. */
function sharedPerScrape<T>(source: () => Promise<T>, ttlMs = 1_000): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | undefined;
  return () => {
    const now = performance.now();
    if (!last || now - last.at > ttlMs) last = { at: now, value: withTimeout(attempt(source), SOURCE_TIMEOUT_MS) };
    return last.value;
  };
}

export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });

  const rpcLabels = ["service", "method", "code"] as const;
  const rpcHandled = new Counter({
    name: "codegate_rpc_handled_total",
    help: "RPCs completed, by service, method and gRPC status code.",
    labelNames: rpcLabels,
    registers,
  });
  const rpcDuration = new Histogram({
    name: "codegate_rpc_duration_seconds",
    help: "Time from the start of an RPC to its last response message, by service, method and status code.",
    labelNames: rpcLabels,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });

  /** A counter by one label, every series of which exists from the start, so that rate() sees the first increment. */
  const countsBy = <V extends string>(name: string, help: string, label: string, values: readonly V[]) => {
    const counter = new Counter({ name, help, labelNames: [label], registers });
    for (const value of values) counter.inc({ [label]: value }, 0);
    return (value: V) => counter.inc({ [label]: value });
  };
  const processErrors = countsBy<ProcessErrorKind>(
    "codegate_process_errors_total",
    "Errors nobody handled: promise rejections nobody awaited, and exceptions thrown out of a callback.",
    "kind",
    ["unhandled_rejection", "uncaught_exception"],
  );
  const connectionsRefused = countsBy<RefusalReason>(
    "codegate_connections_refused_total",
    "Connections refused: every MAX_CONNECTIONS place taken (max_connections), the client address's MAX_CONNECTIONS_PER_ADDRESS (max_connections_per_address), or its MAX_TLS_HANDSHAKES_PER_ADDRESS in this second (max_tls_handshakes_per_address).",
    "reason",
    ["max_connections", "max_connections_per_address", "max_tls_handshakes_per_address"],
  );
  const perPurpose = (name: string, help: string) => {
    const count = countsBy<string>(name, help, "purpose", purposes);
    return (purpose: Purpose) => count(purposeLabel(purpose));
  };
  const takeBacksFailed = new Counter({
    name: "codegate_rate_limit_take_backs_failed_total",
    help: "Requests refused by a rate limit after they had counted (they raced others past the check) whose hits could not be taken back: they count until their windows end.",
    registers,
  });
  const limits: LimitEvents = { takeBackFailed: () => takeBacksFailed.inc() };
  const codes: CodeEvents = {
    ...limits,
    issued: perPurpose("codegate_codes_issued_total", "Codes issued, by purpose."),
    verified: perPurpose("codegate_codes_verified_total", "Codes verified and consumed, by purpose."),
    failed: perPurpose("codegate_codes_failed_total", "Failed verifications (wrong, expired, used or unknown code), by purpose."),
    locked: perPurpose("codegate_codes_locked_total", "Codes that died of too many wrong guesses, by purpose."),
  };
  const courier: CourierEvents = {
    sent: perPurpose("codegate_courier_sent_total", "Mails handed to the mail server, by purpose."),
    retried: perPurpose("codegate_courier_retries_total", "Failed send attempts that will be retried, by purpose."),
    abandoned: perPurpose("codegate_courier_abandoned_total", "Mails given up on after their last attempt, by purpose."),
  };

  const retentionRuns = new Counter({
    name: "codegate_retention_runs_total",
    help: "Ticks of this process's retention timer: pruned (it took the turn and pruned), skipped (a run held the turn: another process's, or this one's still going), failed.",
    labelNames: ["outcome"] as const,
    registers,
  });
  for (const outcome of retentionOutcomes) retentionRuns.inc({ outcome }, 0);
  const retention: RetentionEvents = { ran: (outcome) => retentionRuns.inc({ outcome }) };

  // Gauges read at scrape time. A source that fails reports NaN rather than a
  // stale or zero value, and never fails the whole scrape.
  const queue = sharedPerScrape(sources.courierQueue);
  const pool = sharedPerScrape(sources.pool);
  // Per channel: the courier's SMTP queue, and the delivery API's, whose worker is the operator's own.
  new Gauge({
    name: "codegate_courier_queue_depth",
    help: "Messages queued for delivery (in every organization), by channel (smtp: the courier's; mail_api, sms: the delivery API's).",
    labelNames: ["channel"] as const,
    registers,
    // Every worker of serve reads the same table: summed over them it would count each mail several times.
    aggregator: "max",
    async collect() {
      const stats = await queue().catch(() => undefined);
      for (const c of channels) this.set({ channel: c }, stats ? stats[c].depth : NaN);
    },
  });
  new Gauge({
    name: "codegate_courier_oldest_queued_age_seconds",
    help: "Age of the oldest queued message, by channel; 0 when none is queued.",
    labelNames: ["channel"] as const,
    registers,
    aggregator: "max",
    async collect() {
      const stats = await queue().catch(() => undefined);
      for (const c of channels) {
        const oldest = stats?.[c].oldestQueuedAt;
        this.set({ channel: c }, !stats ? NaN : oldest ? Math.max(0, (sources.now().getTime() - oldest.getTime()) / 1000) : 0);
      }
    },
  });
  new Gauge({
    name: "codegate_db_pool_connections",
    help: "Database connections of this process, by state (in_use, idle).",
    labelNames: ["state"] as const,
    registers,
    async collect() {
      const stats = await pool().catch(() => undefined);
      this.set({ state: "in_use" }, stats ? stats.total - stats.idle : NaN);
      this.set({ state: "idle" }, stats ? stats.idle : NaN);
    },
  });
  new Gauge({
    name: "codegate_db_pool_waiting",
    help: "Queries waiting for a free database connection.",
    registers,
    async collect() {
      this.set(await pool().then((s) => (s ? s.waiting : NaN), () => NaN));
    },
  });
  new Gauge({
    name: "codegate_db_pool_max_connections",
    help: "Largest number of database connections this process opens.",
    registers,
    async collect() {
      this.set(await pool().then((s) => (s ? s.max : NaN), () => NaN));
    },
  });

  const waitingClaims = sources.waitingClaims;
  if (waitingClaims) {
    new Gauge({
      name: "codegate_delivery_claims_waiting",
      help: "Delivery API claims waiting for a message to be queued (ClaimRequest.wait).",
      registers,
      collect() {
        this.set(waitingClaims());
      },
    });
  }

  return {
    registry,
    limits,
    codes,
    courier,
    retention,
    processError: processErrors,
    connectionRefused: connectionsRefused,
    observeRpc(service, method, code, seconds) {
      rpcHandled.inc({ service, method, code });
      rpcDuration.observe({ service, method, code }, seconds);
    },
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}

/** The sources as the server reads them: its database and its clock. */
export function databaseSources(sql: Sql, orm: Orm, clock: Clock): MetricsSources {
  return {
    courierQueue: () => queueStats(sql),
    pool: () => poolStats(orm),
    now: () => clock.now(),
  };
}
