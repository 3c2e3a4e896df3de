import type { CodeEngine } from "../codes/engine.ts";
import type { AppContext } from "../context.ts";
import type { Sql } from "../storage/sql.ts";
import type { ProofTokens } from "../tokens/proof.ts";
import type { FlowLimits } from "./limits.ts";
import type { OrgDirectory } from "./organizations.ts";

/** What every flow works with. */
export interface FlowDeps {
  app: AppContext;
  sql: Sql;
  orgs: OrgDirectory;
  codes: CodeEngine;
  tokens: ProofTokens;
  limits: FlowLimits;
}

export const SUCCESS = { message: "success" } as const;
