// The courier as a process of its own (`codegate courier`): any number of them
// may run beside the API servers; they share the outbox through the database.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Config } from "./config/config.ts";
import { loadSecrets } from "./config/secrets.ts";
import { systemClock } from "./clock.ts";
import { createCourier } from "./courier/create.ts";
import type { Logger } from "./log.ts";
import { createMetrics, databaseSources, type Metrics } from "./metrics.ts";
import { startRetention } from "./storage/retention.ts";
import { openMigrated } from "./storage/orm.ts";
import { sqlOf } from "./storage/sql.ts";

export async function runCourierWorker(config: Config, log: Logger, stopped: Promise<unknown>, onMetrics?: (metrics: Metrics) => void): Promise<void> {
  const secrets = loadSecrets(config, (msg) => log.warn(msg));
  const { orm } = await openMigrated(config);
  const sql = await sqlOf(orm);
  const clock = systemClock;
  const metrics = createMetrics(databaseSources(orm, clock));
  onMetrics?.(metrics);
  const { courier, stop } = createCourier({ config, secrets, sql, clock, log, events: metrics.courier });
  const retention = startRetention({ sql, clock, log, keepMs: config.retention.keepMs, intervalMs: config.retention.intervalMs });
  // Liveness and metrics for whatever runs the worker.
  const ops = http.createServer((req, res) => {
    if (req.url === "/metrics") {
      metrics.render().then(
        ({ contentType, body }) => res.writeHead(200, { "content-type": contentType }).end(body),
        (err: unknown) => {
          log.error({ err }, "metrics could not be rendered");
          res.writeHead(500).end();
        },
      );
    } else if (req.url === "/healthz") {
      res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => ops.listen(config.port, config.host, resolve));
  log.info({ port: (ops.address() as AddressInfo).port }, "courier worker serving /healthz and /metrics");
  courier.start();
  await stopped;
  ops.close();
  await stop();
  await retention.stop();
  await orm.close();
}
