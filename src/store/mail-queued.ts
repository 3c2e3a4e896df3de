// Couriers in other processes (`codegate courier`, the courier worker of `serve`)
// and the delivery API's waiting claims on other servers hear that messages were
// queued through PostgreSQL's NOTIFY, so that an idle courier looks at once rather
// than at its next poll (COURIER_POLL_INTERVAL), and a waiting claim answers. The
// notification is sent after the send's commit, by itself: a NOTIFY in the send's
// transaction would take the lock that serializes notifying commits on every login
// code. Its payload is "<announcer>:<channels>", e.g. "3f9c0a1e7b2d:sms,mail_api":
// the channels name who has messages to claim, and a server skips its own
// announcements, whose claimants it told directly.
import { randomBytes } from "node:crypto";
import { channels as allChannels, type Channel } from "../domain/outbox.ts";
import { listen } from "./listen.ts";
import type { Orm } from "./orm.ts";
import type { Sql } from "./sql.ts";

export const MAIL_QUEUED_CHANNEL = "codegate_mail_queued";

/** A new announcer's name in its payloads. */
export const newAnnouncerTag = (): string => randomBytes(6).toString("hex");

export interface Announcement {
  /** The announcer; undefined when the payload does not say (a server before payloads). */
  from: string | undefined;
  channels: ReadonlySet<Channel>;
}

export const announcementPayload = (from: string, channels: readonly Channel[]): string => `${from}:${channels.join(",")}`;

/**
 * What a payload announces. An empty one, from a server before payloads, meant
 * courier mail; one this version cannot read names every channel, so that a newer
 * server's announcement wakes too many rather than nobody.
 */
export function readAnnouncement(payload: string): Announcement {
  if (payload === "") return { from: undefined, channels: new Set(["smtp"]) };
  const m = /^([0-9a-f]{1,32}):([a-z_,]*)$/.exec(payload);
  const named = m?.[2].split(",") ?? [];
  const known = named.filter((c): c is Channel => (allChannels as readonly string[]).includes(c));
  if (!m || known.length !== named.length) return { from: m?.[1], channels: new Set(allChannels) };
  return { from: m[1], channels: new Set(known) };
}

/** Tells the other processes that messages on these channels were queued (and committed); `from` names the announcer. */
export async function announceMailQueued(sql: Sql, from: string, channels: readonly Channel[]): Promise<void> {
  await sql.query(`select pg_notify($1, $2)`, [MAIL_QUEUED_CHANNEL, announcementPayload(from, channels)]);
}

/**
 * Calls `queued` with the channels of each announcement (but those of the announcer
 * named `self`), and with every channel when announcements may have been missed
 * (the listening connection broke and listens again); `close` ends it.
 */
export function listenMailQueued(
  orm: Orm,
  handlers: { self?: string; queued(channels: ReadonlySet<Channel>): void; error(err: unknown): void },
): Promise<{ close(): Promise<void> }> {
  return listen(orm, MAIL_QUEUED_CHANNEL, {
    notified: (payload) => {
      const announced = readAnnouncement(payload);
      if (handlers.self === undefined || announced.from !== handlers.self) handlers.queued(announced.channels);
    },
    lost: () => handlers.queued(new Set(allChannels)),
    error: handlers.error,
  });
}
