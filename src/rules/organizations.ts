// Finds the organization of a public request: org_id, else the organization of
// tenant_id; when both are given they must agree. Organizations change rarely and
// every public call needs one, so answers are cached for a few seconds per process,
// and forgotten at once when an administrator changes one (org-changes.ts).
import type { Org } from "../domain/organization.ts";
import { findOrganization } from "../store/organizations.ts";
import type { Sql } from "../store/sql.ts";
import type { OrgChanges } from "./org-changes.ts";

const TTL_MS = 5_000;
/** Entries kept at most, of each kind: past it, that kind is forgotten (a cache, not a record). */
const MAX_ENTRIES = 10_000;

interface Entry {
  org: Org | undefined;
  until: number;
}

export class OrgDirectory {
  private readonly sql: Sql;
  /** Names that found an organization. */
  private readonly known = new Map<string, Entry>();
  /**
   * Names that found none, apart: they are whatever clients send, and a client sending
   * new ones by the thousand forgets only them, not the organizations in use.
   */
  private readonly unknown = new Map<string, Entry>();
  private readonly maxEntries: number;
  /** Counts changes: a read that began before one is not cached. */
  private generation = 0;
  constructor(sql: Sql, changes?: OrgChanges, { maxEntries = MAX_ENTRIES }: { maxEntries?: number } = {}) {
    this.sql = sql;
    this.maxEntries = maxEntries;
    // Entries are keyed by org and tenant: any change forgets them all (changes are rare).
    changes?.subscribe(() => {
      this.generation++;
      this.known.clear();
      this.unknown.clear();
    });
  }

  /** The organization named by a request, or undefined if none matches. */
  async resolve(orgId: string, tenantId: string): Promise<Org | undefined> {
    const key = `${orgId}|${tenantId}`;
    const hit = this.known.get(key) ?? this.unknown.get(key);
    const now = Date.now();
    if (hit && hit.until > now) return hit.org;
    const generation = this.generation;
    const org = await findOrganization(this.sql, orgId, tenantId);
    if (generation !== this.generation) return org;
    const entries = org ? this.known : this.unknown;
    // A name that found one kind before and the other now (created, or changed elsewhere) is in one map only.
    (org ? this.unknown : this.known).delete(key);
    if (entries.size >= this.maxEntries) entries.clear();
    entries.set(key, { org, until: now + TTL_MS });
    return org;
  }
}
