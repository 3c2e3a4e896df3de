// Couriers in other processes (`codegate courier`, the courier worker of `serve`)
// hear that mail was queued through PostgreSQL's NOTIFY, so that an idle one looks
// at once rather than at its next poll (COURIER_POLL_INTERVAL). The notification
// is sent after the send's commit, by itself: a NOTIFY in the send's transaction
// would take the lock that serializes notifying commits on every login code.
import { listen } from "./listen.ts";
import type { Orm } from "./orm.ts";
import type { Sql } from "./sql.ts";

export const MAIL_QUEUED_CHANNEL = "codegate_mail_queued";

/** Tells the listening couriers that mail was queued (and committed). */
export async function announceMailQueued(sql: Sql): Promise<void> {
  await sql.query(`select pg_notify($1, '')`, [MAIL_QUEUED_CHANNEL]);
}

/**
 * Calls `queued` for each announcement, and when announcements may have been
 * missed (the listening connection broke and listens again); `close` ends it.
 */
export function listenMailQueued(orm: Orm, handlers: { queued(): void; error(err: unknown): void }): Promise<{ close(): Promise<void> }> {
  return listen(orm, MAIL_QUEUED_CHANNEL, { notified: handlers.queued, lost: handlers.queued, error: handlers.error });
}
