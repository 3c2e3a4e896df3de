import type { Config } from "../config/config.ts";
import type { DeliveryDesk } from "../rules/delivery/delivery.ts";
import type { FlowDeps } from "../rules/flows.ts";
import type { OrgChanges } from "../rules/org-changes.ts";
import type { Orm } from "../store/orm.ts";

/** What the services work with: the flows' dependencies, the configuration, the ORM of the admin reads and writes, and where admin changes are told. */
export interface ServiceDeps extends FlowDeps {
  config: Config;
  orm: Orm;
  changes: OrgChanges;
  /** The delivery API's claims, acks and failures. */
  delivery: DeliveryDesk;
}

export const SUCCESS = { message: "success" } as const;
