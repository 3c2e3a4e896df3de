// The event trail: what was done, by whom, in the transaction that did it. An
// event names what changed by ids; it never holds a code, a token, a username
// or an address.
import type { Purpose } from "./purpose.ts";

export const eventTypes = [
  "code.issued",
  "code.verified",
  "code.failed",
  "code.locked",
  "mail.sent",
  "mail.abandoned",
  "organization.created",
  "organization.settings_updated",
  "identity.created",
  "identity.state_changed",
  "identity.phone_number_set",
  "codes.invalidated",
  "mail_template.set",
  "mail_template.deleted",
] as const;
export type EventType = (typeof eventTypes)[number];

/** Who made a change, as far as the trail records it: the call's request id and, for an administrator, the admin token's id. */
export interface Audit {
  requestId?: string;
  /** The admin token id; absent for public calls and the courier. */
  actor?: string;
}

/**
 * An event's place in the trail: its transaction's id, then its own. Events are
 * handed out in this order, and only once every transaction that could still
 * commit one before it has ended (store/events.ts).
 */
export interface EventPosition {
  /** Decimal strings: both are 64-bit. */
  tx: string;
  id: string;
}

export interface TrailEvent extends EventPosition {
  orgId: string;
  type: EventType;
  purpose: Purpose | null;
  identityId: string | null;
  codeId: string | null;
  mailId: string | null;
  actor: string | null;
  requestId: string | null;
  details: Record<string, string>;
  occurredAt: Date;
}

/** An event as the rules record it in a transaction of theirs. */
export interface NewEvent {
  orgId: string;
  type: EventType;
  purpose?: Purpose;
  identityId?: string;
  codeId?: string;
  details?: Record<string, string>;
  occurredAt: Date;
}

const POSITION = /^([0-9]{1,19})-([0-9]{1,19})$/;

/** The cursor of a position: `tx-id`. */
export const cursorOf = (p: EventPosition): string => `${p.tx}-${p.id}`;

/** The position a cursor names, or undefined when it names none. */
export function positionOf(cursor: string): EventPosition | undefined {
  const m = POSITION.exec(cursor);
  if (!m || BigInt(m[1]) > 2n ** 63n - 1n || BigInt(m[2]) > 2n ** 63n - 1n) return undefined;
  return { tx: m[1], id: m[2] };
}
