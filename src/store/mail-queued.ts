// Couriers in other processes (`codegate courier`, the courier worker of `serve`)
// and the delivery API's waiting claims on other servers hear that messages were
// queued through PostgreSQL's NOTIFY, so that an idle courier looks at once rather
// than at its next poll (COURIER_POLL_INTERVAL), and a waiting claim answers. The
// notification is sent after the send's commit, by itself: a NOTIFY in the send's
// transaction would take the lock that serializes notifying commits on every login
// code. Its payload names who has messages to claim: "courier", "api", or both.
import type { Claimant } from "../domain/outbox.ts";
import { listen } from "./listen.ts";
import type { Orm } from "./orm.ts";
import type { Sql } from "./sql.ts";

export const MAIL_QUEUED_CHANNEL = "codegate_mail_queued";

/** Tells the listeners that messages for these claimants were queued (and committed). */
export async function announceMailQueued(sql: Sql, claimants: readonly Claimant[]): Promise<void> {
  await sql.query(`select pg_notify($1, $2)`, [MAIL_QUEUED_CHANNEL, claimants.join(",")]);
}

/** Who a notification's payload names; an empty one (from a server before payloads) meant the courier. */
export function claimantsOf(payload: string): Set<Claimant> {
  const named = new Set(payload.split(",").filter((p): p is Claimant => p === "courier" || p === "api"));
  return payload === "" ? new Set(["courier"]) : named;
}

/**
 * Calls `queued` with who has messages to claim for each announcement, and with
 * everyone when announcements may have been missed (the listening connection broke
 * and listens again); `close` ends it.
 */
export function listenMailQueued(orm: Orm, handlers: { queued(claimants: ReadonlySet<Claimant>): void; error(err: unknown): void }): Promise<{ close(): Promise<void> }> {
  return listen(orm, MAIL_QUEUED_CHANNEL, {
    notified: (payload) => handlers.queued(claimantsOf(payload)),
    lost: () => handlers.queued(new Set(["courier", "api"])),
    error: handlers.error,
  });
}
