// The courier as a process of its own (`codegate courier`, or the courier worker
// of `serve`, server/cluster.ts): any number of them may run beside the API
// servers; they share the outbox through the database.
import type { Config } from "../config/config.ts";
import { loadSecrets } from "../config/secrets.ts";
import { systemClock } from "../domain/clock.ts";
import type { Logger } from "../lib/log.ts";
import { createCourier, wakeOnQueuedMail } from "../rules/courier/create.ts";
import { startRetention } from "../rules/retention.ts";
import { openMigrated, openOrm } from "../store/orm.ts";
import { sqlOf } from "../store/sql.ts";
import { createMetrics, databaseSources, type Metrics } from "./ops/metrics.ts";
import { metricsRoute, startOpsListener } from "./ops/ops.ts";
import { startTracing } from "./tracing.ts";
import { tracedSql } from "../store/traced-sql.ts";

export interface CourierWorkerOptions {
  onMetrics?: (metrics: Metrics) => void;
  /** The courier worker of `serve`: its primary has run the migrations and serves the operations listener. */
  worker?: boolean;
}

export async function runCourierWorker(config: Config, log: Logger, stopped: Promise<unknown>, opts: CourierWorkerOptions = {}): Promise<void> {
  const secrets = loadSecrets(config, (msg) => log.warn(msg));
  const orm = opts.worker ? await openOrm(config) : (await openMigrated(config)).orm;
  const tracing = startTracing(config, "courier");
  const untraced = await sqlOf(orm);
  const sql = tracing ? tracedSql(untraced) : untraced;
  const clock = systemClock;
  const metrics = createMetrics(databaseSources(sql, orm, clock));
  opts.onMetrics?.(metrics);
  const { courier, stop } = createCourier({ config, secrets, sql, clock, log, events: metrics.courier });
  // Mail queued by a server without a courier of its own is heard of at once, not at the next poll.
  const queuedFeed = await wakeOnQueuedMail(orm, courier, log);
  const retention = startRetention({ sql, clock, log, ...config.retention, events: metrics.retention });
  // Liveness and metrics for whatever runs the worker, on its operations listener.
  const ops = opts.worker
    ? undefined
    : await startOpsListener({ "GET /metrics": metricsRoute(metrics) }, { host: config.opsHost, port: config.opsPort, headersTimeoutMs: config.headersTimeoutMs, log });
  if (ops) log.info({ opsPort: ops.port }, "courier worker serving /healthz and /metrics");
  courier.start();
  await stopped;
  await ops?.close();
  await queuedFeed.close();
  await stop();
  await retention.stop();
  await orm.close();
  await tracing?.stop();
}
