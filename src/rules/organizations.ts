// Finds the organization of a public request: org_id, else the organization of
// tenant_id; when both are given they must agree. Organizations change rarely and
// every public call needs one, so answers are cached for a few seconds per process.
import type { Org } from "../domain/organization.ts";
import { findOrganization } from "../store/organizations.ts";
import type { Sql } from "../store/sql.ts";

const TTL_MS = 5_000;

export class OrgDirectory {
  private readonly sql: Sql;
  private readonly cache = new Map<string, { org: Org | undefined; until: number }>();
  constructor(sql: Sql) {
    this.sql = sql;
  }

  /** The organization named by a request, or undefined if none matches. */
  async resolve(orgId: string, tenantId: string): Promise<Org | undefined> {
    const key = `${orgId}|${tenantId}`;
    const hit = this.cache.get(key);
    const now = Date.now();
    if (hit && hit.until > now) return hit.org;
    const org = await findOrganization(this.sql, orgId, tenantId);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, { org, until: now + TTL_MS });
    return org;
  }
}
