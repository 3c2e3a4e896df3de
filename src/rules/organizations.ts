// Finds the organization of a public request: org_id, else the organization of
// tenant_id; when both are given they must agree. Organizations change rarely and
// every public call needs one, so answers are cached for a few seconds per process,
// and forgotten at once when an administrator changes one (org-changes.ts).
import type { Org } from "../domain/organization.ts";
import { findOrganization } from "../store/organizations.ts";
import type { Sql } from "../store/sql.ts";
import type { OrgChanges } from "./org-changes.ts";

const TTL_MS = 5_000;

export class OrgDirectory {
  private readonly sql: Sql;
  private readonly cache = new Map<string, { org: Org | undefined; until: number }>();
  /** Counts changes: a read that began before one is not cached. */
  private generation = 0;
  constructor(sql: Sql, changes?: OrgChanges) {
    this.sql = sql;
    // Entries are keyed by org and tenant: any change forgets them all (changes are rare).
    changes?.subscribe(() => {
      this.generation++;
      this.cache.clear();
    });
  }

  /** The organization named by a request, or undefined if none matches. */
  async resolve(orgId: string, tenantId: string): Promise<Org | undefined> {
    const key = `${orgId}|${tenantId}`;
    const hit = this.cache.get(key);
    const now = Date.now();
    if (hit && hit.until > now) return hit.org;
    const generation = this.generation;
    const org = await findOrganization(this.sql, orgId, tenantId);
    if (generation !== this.generation) return org;
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, { org, until: now + TTL_MS });
    return org;
  }
}
