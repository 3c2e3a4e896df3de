import { normalizeUsername } from "../codes/engine.ts";
import type { IdentityStateName } from "../storage/entities.ts";
import type { Sql } from "../storage/sql.ts";

/** The state of the identity with this username in the organization, if there is one. */
export async function identityState(sql: Sql, orgId: string, username: string): Promise<IdentityStateName | undefined> {
  const [row] = await sql.query<{ state: IdentityStateName }>(
    `select state from identity where org_id = $1 and username_normalized = $2`,
    [orgId, normalizeUsername(username)],
  );
  return row?.state;
}
