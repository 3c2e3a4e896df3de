// Finds the organization of a public request: org_id, else the organization of
// tenant_id; when both are given they must agree. Organizations change rarely and
// every public call needs one, so answers are cached for a few seconds per process.
import type { OrganizationSettings } from "../../gen/codegate/v1/types_pb.ts";
import type { Sql } from "../storage/sql.ts";
import { settingsFromJson } from "../transport/mapping.ts";

export interface Org {
  id: string;
  tenantId: string;
  name: string;
  settings: OrganizationSettings;
}

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
    const org = await this.load(orgId, tenantId);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(key, { org, until: now + TTL_MS });
    return org;
  }

  private async load(orgId: string, tenantId: string): Promise<Org | undefined> {
    const rows = orgId
      ? await this.sql.query(`select id, tenant_id, name, settings from organization where id = $1`, [orgId])
      : await this.sql.query(`select id, tenant_id, name, settings from organization where tenant_id = $1 order by created_at, id limit 1`, [
          tenantId,
        ]);
    const row = rows[0];
    if (!row || (tenantId && row.tenant_id !== tenantId)) return undefined;
    return { id: row.id, tenantId: row.tenant_id, name: row.name, settings: settingsFromJson(row.settings) };
  }
}
