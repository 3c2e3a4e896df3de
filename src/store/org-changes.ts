// Every server process caches organizations and their mail templates
// (rules/organizations.ts, rules/mail/org-templates.ts). An admin change is
// announced with PostgreSQL's NOTIFY in the transaction that makes it, so it is
// heard once committed, by every process that LISTENs on the same database
// (listen.ts). PGlite serves one process only, which forgets its own changes
// itself: nothing to listen to.
import { listen } from "./listen.ts";
import type { Orm } from "./orm.ts";
import type { Sql } from "./sql.ts";

export const ORG_CHANGES_CHANNEL = "codegate_org_changed";

/** Announces a change of an organization's settings or templates; run it in the transaction of the change. */
export async function notifyOrgChanged(sql: Sql, orgId: string): Promise<void> {
  await sql.query(`select pg_notify($1, $2)`, [ORG_CHANGES_CHANNEL, orgId]);
}

export interface OrgChangeHandlers {
  /** An organization changed. */
  changed(orgId: string): void;
  /** Changes may have been missed while not listening: forget everything. */
  lost(): void;
  /** The listening connection broke (it is opened again). */
  error(err: unknown): void;
}

/** Listens for changes on a connection of its own (listen.ts); `close` ends it. */
export function listenOrgChanges(orm: Orm, handlers: OrgChangeHandlers): Promise<{ close(): Promise<void> }> {
  return listen(orm, ORG_CHANGES_CHANNEL, {
    notified: (orgId) => {
      if (orgId) handlers.changed(orgId);
    },
    lost: handlers.lost,
    error: handlers.error,
  });
}
