import type { SqlEntityManager as EntityManager } from "@mikro-orm/sql";
import type { Clock } from "./clock.ts";
import type { Config } from "./config/config.ts";
import type { Secrets } from "./config/secrets.ts";
import type { Logger } from "./log.ts";
import type { Orm } from "./storage/orm.ts";

/** What the flows and the transport share: one per server process. */
export interface AppContext {
  config: Config;
  secrets: Secrets;
  orm: Orm;
  log: Logger;
  clock: Clock;
  /** A fresh unit of work, for one request. */
  em(): EntityManager;
}
