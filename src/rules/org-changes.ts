// Changes of organizations (settings, mail templates) that the caches of this
// process must hear of: made here (the admin rules call `changed` once their
// transaction committed) or by another process on the same database (heard
// through PostgreSQL's LISTEN, store/org-changes.ts).
import type { Logger } from "../lib/log.ts";
import { listenOrgChanges } from "../store/org-changes.ts";
import type { Orm } from "../store/orm.ts";

export type OrgChangeListener = (orgId: string | undefined) => void;

export class OrgChanges {
  private readonly listeners = new Set<OrgChangeListener>();

  /** `listener` hears an organization's id when it changed, or undefined when any may have. Answers the unsubscribe. */
  subscribe(listener: OrgChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  changed(orgId: string | undefined): void {
    for (const listener of [...this.listeners]) listener(orgId);
  }
}

/** Feeds `changes` with the changes every process announces on the database; answers its stop. */
export async function followOrgChanges(orm: Orm, changes: OrgChanges, log: Logger): Promise<{ close(): Promise<void> }> {
  return listenOrgChanges(orm, {
    changed: (orgId) => changes.changed(orgId),
    lost: () => {
      log.info("listening for organization changes again: cached organizations and templates forgotten");
      changes.changed(undefined);
    },
    error: (err) => log.warn({ err }, "the connection listening for organization changes broke; opening it again"),
  });
}
