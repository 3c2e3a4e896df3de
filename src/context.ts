import type { SqlEntityManager as EntityManager } from "@mikro-orm/sql";
import type { Clock } from "./clock.ts";
import type { Config } from "./config/config.ts";
import type { Secrets } from "./config/secrets.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { Orm } from "./storage/orm.ts";

/** What the flows and the transport share: one per server process. */
export interface AppContext {
  config: Config;
  secrets: Secrets;
  orm: Orm;
  log: Logger;
  clock: Clock;
  /** Counters the flows and the courier increment: metrics.codes.issued(purpose), … */
  metrics: Metrics;
  /** A fresh unit of work, for one request. */
  em(): EntityManager;
}
