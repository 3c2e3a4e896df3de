import type { Config } from "../config/config.ts";
import type { FlowDeps } from "../rules/flows.ts";
import type { Orm } from "../store/orm.ts";

/** What the services work with: the flows' dependencies, the configuration, and the ORM of the admin reads and writes. */
export interface ServiceDeps extends FlowDeps {
  config: Config;
  orm: Orm;
}

export const SUCCESS = { message: "success" } as const;
