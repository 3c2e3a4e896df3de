// The event trail's statements. Events are written by the statement of their
// change where that is a hot path (store/codes.ts, store/outbox.ts: a
// data-modifying CTE, so no statement is added and the event commits or rolls
// back with its change), and by recordEvent in the transaction of an
// administrator's change.
//
// Reading in commit order. Event ids come from a sequence, and a sequence hands
// out numbers in the order statements ask, not in the order their transactions
// commit: a transaction may take id 7, then commit after another one's id 8 was
// read. A reader that remembered "after 8" would never see 7. So every event
// also records its transaction's id (`tx`, pg_current_xact_id()), and readers
// hand out only events whose transaction is older than every transaction still
// in flight (pg_snapshot_xmin of the statement's own snapshot), in (tx, id)
// order. Any transaction that has not ended has a tx at or above that horizon,
// and so does any that starts later: no event can ever commit before a position
// already handed out. The cost is latency: an event waits for transactions that
// began before its own to end (on this database server; they are single
// statements or short admin transactions, bounded by DATABASE_STATEMENT_TIMEOUT).
import type { Audit, EventPosition, EventType, NewEvent, TrailEvent } from "../domain/events.ts";
import type { Purpose } from "../domain/purpose.ts";
import { planEachCall, type Sql } from "./sql.ts";

/** The oldest transaction still in flight: events of older transactions are final. */
export const SETTLED = `tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint`;

// tx and id go out as text (both 64-bit): ORDER BY must name the table's columns,
// as a bare name would be the text of the select list, which sorts 1000 before 999.
const COLUMNS = `org_id, id::text as id, tx::text as tx, type, purpose, identity_id, code_id, mail_id, actor, request_id, details, occurred_at`;

const eventOf = (r: Record<string, any>): TrailEvent => ({
  orgId: r.org_id,
  id: String(r.id),
  tx: String(r.tx),
  type: r.type as EventType,
  purpose: (r.purpose ?? null) as Purpose | null,
  identityId: r.identity_id ?? null,
  codeId: r.code_id ?? null,
  mailId: r.mail_id ?? null,
  actor: r.actor ?? null,
  requestId: r.request_id ?? null,
  details: (typeof r.details === "string" ? JSON.parse(r.details) : r.details) ?? {},
  occurredAt: new Date(r.occurred_at),
});

/** Records an event; run it in the transaction of the change. */
export async function recordEvent(sql: Sql, e: NewEvent, audit: Audit = {}): Promise<void> {
  await sql.query(
    `insert into event (org_id, type, purpose, identity_id, code_id, actor, request_id, details, occurred_at)
     values ($1, $2, nullif($3::text, ''), $4::uuid, $5::uuid, nullif($6::text, ''), nullif($7::text, ''), $8::jsonb, $9)`,
    [
      e.orgId,
      e.type,
      e.purpose ?? "",
      e.identityId ?? null,
      e.codeId ?? null,
      audit.actor ?? "",
      audit.requestId ?? "",
      e.details ? JSON.stringify(e.details) : null,
      e.occurredAt,
    ],
  );
}

export interface EventFilter {
  /** "" for every organization. */
  orgId: string;
  type?: EventType;
  identityId?: string;
}

/**
 * A page of settled events, newest first, before `before`; one more than `size`
 * tells that another page follows.
 */
export async function listEvents(sql: Sql, filter: EventFilter, before: EventPosition | undefined, size: number): Promise<TrailEvent[]> {
  const rows = await sql.query(
    `select ${COLUMNS} from event
     where ${filter.orgId ? "org_id = $1" : "$1 = ''"} and ${SETTLED}
       and ($2 = '' or type = $2) and ($3::uuid is null or identity_id = $3::uuid)
       and ($4::bigint is null or (tx, id) < ($4::bigint, $5::bigint))
     order by event.tx desc, event.id desc
     limit $6`,
    [filter.orgId, filter.type ?? "", filter.identityId || null, before?.tx ?? null, before?.id ?? null, size + 1],
  );
  return rows.map(eventOf);
}

const eventsAfterSql = (scope: string) => `select ${COLUMNS} from event
     where ${scope} and ${SETTLED}
       and (tx, id) > ($2::bigint, $3::bigint)
     order by event.tx, event.id
     limit $4`;
const EVENTS_AFTER_IN_ORG = eventsAfterSql("org_id = $1");
// Across organizations, as a WatchEvents of every organization polls it, also while the
// trail is empty: planned at each call (sql.ts, planEachCall).
const EVENTS_AFTER_IN_ALL = planEachCall(eventsAfterSql("$1 = ''"));

/** Settled events after `after` (from the first when undefined), oldest first, at most `size`. */
export async function eventsAfter(sql: Sql, orgId: string, after: EventPosition | undefined, size: number): Promise<TrailEvent[]> {
  const rows = await sql.query(orgId ? EVENTS_AFTER_IN_ORG : EVENTS_AFTER_IN_ALL, [orgId, after?.tx ?? "-1", after?.id ?? "-1", size]);
  return rows.map(eventOf);
}
