// The command line: `serve` (default), `courier`, `migrate`, `prune`, `admin-token create|revoke`.
import { createAdminToken, revokeAdminToken } from "./rules/admin-tokens.ts";
import { loadConfig, type Config } from "./config/config.ts";
import { ConfigError } from "./config/env.ts";
import { createLogger, type Logger } from "./lib/log.ts";
import cluster from "node:cluster";
import { startApp, type App } from "./server/app.ts";
import { reportMetricsToPrimary, runPrimary, ticketKeysFromPrimary, workerChannel, workerRole } from "./server/cluster.ts";
import type { Metrics } from "./server/ops/metrics.ts";
import { guardProcess } from "./server/process-guard.ts";
import { loadTlsFiles } from "./server/tls.ts";
import { runCourierWorker } from "./server/worker.ts";
import { EmbeddedDatabaseBusy } from "./store/embedded-lock.ts";
import { openMigrated } from "./store/orm.ts";
import { prune } from "./store/retention.ts";
import { sqlOf } from "./store/sql.ts";

const usage = `usage: codegate [serve | courier | migrate | prune | admin-token create [--delivery] [name] | admin-token revoke <id>]
  serve        the API (and the courier unless COURIER_ENABLED=false), in WORKERS processes
  courier      the mail courier alone; run as many as needed
  migrate      apply the database migrations
  prune        delete dead codes, sent mail metadata and ended rate-limit windows now
  admin-token  create a token (--delivery: one that may call DeliveryService only, for a delivery worker), or revoke one`;

/** Resolves on the first SIGTERM or SIGINT. */
function stopSignal(log: Logger): Promise<void> {
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, "shutting down");
      resolve();
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}

/**
 * Installs the process-level error handlers (server/process-guard.ts); `crashed`
 * resolves on the first uncaught exception, when the process must stop.
 */
function guard(log: Logger, metrics: () => Metrics | undefined): { crashed: Promise<void> } {
  let crash!: () => void;
  const crashed = new Promise<void>((resolve) => (crash = resolve));
  guardProcess(log, { count: (kind) => metrics()?.processError(kind), onUncaughtException: () => crash() });
  return { crashed };
}

async function main(args: string[]): Promise<number> {
  const delivery = args.includes("--delivery");
  // A mistyped flag would otherwise become a token's name, and the token one of every scope.
  const unknownFlag = args.find((a) => a.startsWith("--") && a !== "--delivery");
  if (unknownFlag) {
    console.error(`unknown option ${unknownFlag}\n${usage}`);
    return 2;
  }
  const [command = "serve", sub, arg] = args.filter((a) => a !== "--delivery");
  const config = loadConfig(process.env, { serving: command === "serve" || command === "courier" });
  switch (command) {
    case "serve":
      return serve(config);
    case "courier": {
      const log = createLogger(config.logLevel);
      let metrics: Metrics | undefined;
      const { crashed } = guard(log, () => metrics);
      let failed = false;
      const stopped = Promise.race([stopSignal(log), crashed.then(() => void (failed = true))]);
      await runCourierWorker(config, log, stopped, { onMetrics: (m) => (metrics = m) });
      log.info("stopped");
      return failed ? 1 : 0;
    }
    case "prune": {
      const { orm } = await openMigrated(config);
      try {
        const pruned = await prune(await sqlOf(orm), new Date(), config.retention.keepMs, config.retention.eventsKeepMs);
        console.log(`pruned ${pruned.codes} codes, ${pruned.mails} mails, ${pruned.rateLimits} rate-limit windows, ${pruned.events} events`);
        return 0;
      } finally {
        await orm.close();
      }
    }
    case "migrate": {
      // Without the statement timeout of the requests (openMigrated): an index built on a large table may take minutes.
      const { orm, applied } = await openMigrated(config);
      await orm.close();
      console.log(applied.length ? `applied: ${applied.join(", ")}` : "database is up to date");
      return 0;
    }
    case "admin-token": {
      const { orm } = await openMigrated(config);
      try {
        if (sub === "create") {
          const { id, token } = await createAdminToken(orm, arg ?? (delivery ? "delivery token" : "admin token"), new Date(), delivery ? "delivery" : "admin");
          console.log(`${delivery ? "delivery token (DeliveryService only)" : "admin token"} ${id} (shown once, keep it safe):\n${token}`);
          return 0;
        }
        if (sub === "revoke" && arg) {
          const done = await revokeAdminToken(orm, arg, new Date());
          console.log(done ? `revoked ${arg}` : `no live admin token ${arg}`);
          return done ? 0 : 1;
        }
      } finally {
        await orm.close();
      }
      console.error(usage);
      return 2;
    }
    default:
      console.error(usage);
      return 2;
  }
}

async function serve(config: ReturnType<typeof loadConfig>): Promise<number> {
  const role = workerRole();
  if (role === "api") return serveApiWorker(config);
  if (role === "courier") return serveCourierWorker(config);
  if (config.workers > 1) return servePrimary(config);
  return serveAlone(config);
}

/** `serve` with WORKERS > 1: the primary of server/cluster.ts. */
async function servePrimary(config: Config): Promise<number> {
  // Each worker loads the certificate; one that does not load is said once, here, rather than by every worker in a crash loop.
  if (config.tls) loadTlsFiles(config.tls);
  const log = createLogger(config.logLevel).child({ role: "primary" });
  const { crashed } = guard(log, () => undefined);
  let failed = false;
  const stopped = Promise.race([stopSignal(log), crashed.then(() => void (failed = true))]);
  const { code } = await runPrimary(config, log, stopped);
  log.info("stopped");
  return failed ? 1 : code;
}

/** An API worker of `serve`: the API without the courier, its metrics summed by the primary. */
async function serveApiWorker(config: Config): Promise<number> {
  const log = createLogger(config.logLevel).child({ role: "api", worker: cluster.worker!.id });
  let app: App | undefined;
  const { crashed } = guard(log, () => app?.metrics);
  const tlsTicketKeys = config.tls ? await ticketKeysFromPrimary() : undefined;
  app = await startApp({ ...config, courier: { ...config.courier, enabled: false } }, { log, worker: true, retention: !config.courier.enabled, tlsTicketKeys });
  reportMetricsToPrimary(app.metrics.registry);
  const { stopped } = workerChannel({ port: app.port, readiness: () => app!.health.readiness() });
  const failed = await Promise.race([stopped.then(() => false), stopSignal(log).then(() => false), crashed.then(() => true)]);
  await app.close();
  log.info("stopped");
  return failed ? 1 : 0;
}

/** The courier worker of `serve`. */
async function serveCourierWorker(config: Config): Promise<number> {
  const log = createLogger(config.logLevel).child({ role: "courier", worker: cluster.worker!.id });
  let metrics: Metrics | undefined;
  const { crashed } = guard(log, () => metrics);
  let failed = false;
  const { stopped } = workerChannel({});
  const stop = Promise.race([stopped, stopSignal(log), crashed.then(() => void (failed = true))]);
  await runCourierWorker(config, log, stop, {
    worker: true,
    onMetrics: (m) => {
      metrics = m;
      reportMetricsToPrimary(m.registry);
    },
  });
  log.info("stopped");
  return failed ? 1 : 0;
}

/** `serve` in one process: the API, the courier and the operations listener. */
async function serveAlone(config: Config): Promise<number> {
  const log = createLogger(config.logLevel);
  let app: App | undefined;
  const { crashed } = guard(log, () => app?.metrics);
  app = await startApp(config, { log });
  if (app.firstAdminToken) {
    const base = config.publicUrl;
    process.stdout.write(
      `\n  Codegate is running on ${base} (embedded PostgreSQL in ${config.dataDir}).\n` +
        `  Mails are written to ${config.dataDir}/mail as .eml files.\n\n` +
        `  Admin token (shown once, kept only as a hash):\n    ${app.firstAdminToken}\n\n` +
        `  Try it:\n` +
        `    export TOKEN=${app.firstAdminToken}\n` +
        `    curl -s ${base}/codegate.v1.AdminService/CreateOrganization -H "Authorization: Bearer $TOKEN" \\\n` +
        `      -H 'Content-Type: application/json' -d '{"name":"Example"}'\n` +
        (config.tls ? `    (a certificate that no system CA signed, such as a self-signed one: add --cacert ${config.tls.certFile})\n\n` : "\n"),
    );
  }
  const failed = await Promise.race([stopSignal(log).then(() => false), crashed.then(() => true)]);
  await app.close();
  log.info("stopped");
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    if (err instanceof EmbeddedDatabaseBusy) {
      console.error(err.message);
      process.exit(1);
    }
    console.error(err);
    process.exit(1);
  },
);
