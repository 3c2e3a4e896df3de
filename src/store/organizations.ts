// Organizations: found by id or tenant on the hot path (one prepared statement),
// created and listed by the admin API (MikroORM).
import type { Audit } from "../domain/events.ts";
import type { Org, OrgSettings } from "../domain/organization.ts";
import { OrganizationEntity } from "./entities.ts";
import type { Orm } from "./orm.ts";
import type { Cursor } from "./paging.ts";
import type { Row, Sql } from "./sql.ts";

const orgOf = (row: { id: string; tenantId: string; name: string; settings: unknown; createdAt: Date }): Org => ({
  id: row.id,
  tenantId: row.tenantId,
  name: row.name,
  settings: (row.settings ?? {}) as OrgSettings,
  createdAt: new Date(row.createdAt),
});

/** An organization as a statement's row names it. */
const orgOfRow = (row: Row): Org => orgOf({ id: row.id, tenantId: row.tenant_id, name: row.name, settings: row.settings, createdAt: row.created_at });

/** The organization `orgId` names, else the first of `tenantId`; undefined if none (or they disagree). */
export async function findOrganization(sql: Sql, orgId: string, tenantId: string): Promise<Org | undefined> {
  const rows = orgId
    ? await sql.query(`select id, tenant_id, name, settings, created_at from organization where id = $1`, [orgId])
    : await sql.query(`select id, tenant_id, name, settings, created_at from organization where tenant_id = $1 order by created_at, id limit 1`, [tenantId]);
  const row = rows[0];
  if (!row || (tenantId && row.tenant_id !== tenantId)) return undefined;
  return orgOfRow(row);
}

/** Inserts an organization and its event of the trail, in one statement. */
export async function createOrganization(sql: Sql, org: Org, audit: Audit = {}): Promise<Org> {
  await sql.query(
    `with created as (
       insert into organization (id, tenant_id, name, settings, created_at) values ($1, $2, $3, $4::jsonb, $5) returning id
     )
     insert into event (org_id, type, actor, request_id, occurred_at)
     select id, 'organization.created', nullif($6::text, ''), nullif($7::text, ''), $5 from created`,
    [org.id, org.tenantId, org.name, JSON.stringify(org.settings), org.createdAt, audit.actor ?? "", audit.requestId ?? ""],
  );
  return org;
}

export async function getOrganization(orm: Orm, id: string): Promise<Org | undefined> {
  const row = await orm.em.fork().findOne(OrganizationEntity, { id });
  return row ? orgOf(row) : undefined;
}

/** A page in creation order, after `cursor` (from organization_created_idx, whose predicate it states, as identities are listed); one more than `size` tells that another page follows. */
export async function listOrganizations(sql: Sql, cursor: Cursor | undefined, size: number): Promise<Org[]> {
  const rows = cursor
    ? await sql.query(`select id, tenant_id, name, settings, created_at from organization where created_at > '-infinity' and (created_at, id) > ($1, $2) order by created_at, id limit $3`, [
        cursor.createdAt,
        cursor.id,
        size + 1,
      ])
    : await sql.query(`select id, tenant_id, name, settings, created_at from organization where created_at > '-infinity' order by created_at, id limit $1`, [size + 1]);
  return rows.map(orgOfRow);
}

/** Replaces an organization's settings; undefined if there is no such organization. */
export async function updateOrganizationSettings(sql: Sql, orgId: string, settings: OrgSettings): Promise<Org | undefined> {
  const [row] = await sql.query(`update organization set settings = $2::jsonb where id = $1 returning id, tenant_id, name, settings, created_at`, [orgId, JSON.stringify(settings)]);
  return row ? orgOfRow(row) : undefined;
}
