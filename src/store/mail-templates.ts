// An organization's own mail templates: read all at once per organization into
// each server's cache (one statement, by the primary key's prefix), and written
// by the admin API, each write announcing the change (org-changes.ts) in its
// own transaction.
import type { Sql } from "./sql.ts";

export interface StoredTemplate {
  orgId: string;
  kind: string;
  locale: string;
  subject: string;
  text: string;
  html: string;
  updatedAt: Date;
}

const templateOf = (r: Record<string, any>): StoredTemplate => ({
  orgId: r.org_id,
  kind: r.kind,
  locale: r.locale,
  subject: r.subject,
  text: r.text,
  html: r.html,
  updatedAt: new Date(r.updated_at),
});

/** Every template of an organization, by kind and locale. */
export async function organizationTemplates(sql: Sql, orgId: string): Promise<StoredTemplate[]> {
  const rows = await sql.query(`select org_id, kind, locale, subject, text, html, updated_at from mail_template where org_id = $1 order by kind, locale`, [orgId]);
  return rows.map(templateOf);
}

/**
 * Saves a template, replacing the one of its kind and locale. Answers
 * "no-organization" when the organization does not exist and "full" when it
 * already has `max` templates and this would be another.
 */
export async function saveTemplate(sql: Sql, t: StoredTemplate, max: number): Promise<StoredTemplate | "no-organization" | "full"> {
  const rows = await sql.query(
    `with org as (select id from organization where id = $1),
     existing as (select count(*) filter (where not (kind = $2 and locale = $3))::int as others from mail_template where org_id = $1)
     insert into mail_template (org_id, kind, locale, subject, text, html, updated_at)
     select org.id, $2, $3, $4, $5, $6, $7 from org, existing where existing.others < $8
     on conflict (org_id, kind, locale) do update set subject = excluded.subject, text = excluded.text, html = excluded.html, updated_at = excluded.updated_at
     returning org_id, kind, locale, subject, text, html, updated_at`,
    [t.orgId, t.kind, t.locale, t.subject, t.text, t.html, t.updatedAt, max],
  );
  if (rows[0]) return templateOf(rows[0]);
  const [org] = await sql.query(`select 1 from organization where id = $1`, [t.orgId]);
  return org ? "full" : "no-organization";
}

/** Deletes a template; answers whether there was one. */
export async function deleteTemplate(sql: Sql, orgId: string, kind: string, locale: string): Promise<boolean> {
  const rows = await sql.query(`delete from mail_template where org_id = $1 and kind = $2 and locale = $3 returning kind`, [orgId, kind, locale]);
  return rows.length > 0;
}
