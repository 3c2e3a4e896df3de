// The courier as a process of its own (`codegate courier`): any number of them
// may run beside the API servers; they share the outbox through the database.
import type { Config } from "./config/config.ts";
import { loadSecrets } from "./config/secrets.ts";
import { systemClock } from "./clock.ts";
import { createCourier } from "./courier/create.ts";
import type { Logger } from "./log.ts";
import { createMetrics, databaseSources, type Metrics } from "./metrics.ts";
import { startRetention } from "./storage/retention.ts";
import { openMigrated } from "./storage/orm.ts";
import { sqlOf } from "./storage/sql.ts";
import { metricsRoute, startOpsListener } from "./transport/ops.ts";

export async function runCourierWorker(config: Config, log: Logger, stopped: Promise<unknown>, onMetrics?: (metrics: Metrics) => void): Promise<void> {
  const secrets = loadSecrets(config, (msg) => log.warn(msg));
  const { orm } = await openMigrated(config);
  const sql = await sqlOf(orm);
  const clock = systemClock;
  const metrics = createMetrics(databaseSources(orm, clock));
  onMetrics?.(metrics);
  const { courier, stop } = createCourier({ config, secrets, sql, clock, log, events: metrics.courier });
  const retention = startRetention({ sql, clock, log, keepMs: config.retention.keepMs, intervalMs: config.retention.intervalMs });
  // Liveness and metrics for whatever runs the worker, on its operations listener.
  const ops = await startOpsListener({ "GET /metrics": metricsRoute(metrics) }, { host: config.opsHost, port: config.opsPort, headersTimeoutMs: config.headersTimeoutMs, log });
  log.info({ opsPort: ops.port }, "courier worker serving /healthz and /metrics");
  courier.start();
  await stopped;
  await ops.close();
  await stop();
  await retention.stop();
  await orm.close();
}
