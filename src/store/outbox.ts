// The outbox: mails queued with their codes (store/codes.ts), claimed by couriers
// with FOR UPDATE SKIP LOCKED and a lease, marked sent or failed, listed by the
// admin API, and counted for the metrics.
import { channels, mailStatuses, type Channel, type MailStatus } from "../domain/outbox.ts";
import type { Purpose } from "../domain/purpose.ts";
import type { Cursor } from "./paging.ts";
import { bytes, planEachCall, type Row, type Sql } from "./sql.ts";

/** `m`'s id within lo and hi (see "Each statement names its mails" below). */
export const ID_RANGE = (m: string, lo: string, hi: string) => `${m}.id between ${lo}::uuid and ${hi}::uuid`;

/** A claim's update within the range of the ids its CTE `c` chose. */
export const CLAIMED_RANGE = ID_RANGE("m", "(select id from c order by id limit 1)", "(select id from c order by id desc limit 1)");

/** Said of a message abandoned by a claim because its last attempt's lease lapsed. */
export const LAPSED_ERROR = "its lease lapsed at its last attempt: whoever held it stopped before an outcome";

/**
 * What a claim writes to each message it takes (`m`), leasing it until `until` under
 * `token`. A message still marked claimed, its `claimed_until` past, had a lease that
 * lapsed: whoever held it died or hung with it, perhaps after sending it. That was an
 * attempt, counted here; uncounted, a message that kills whoever takes it came back for
 * ever. One whose lapsed lease was its last attempt (`max`) is abandoned, its body
 * wiped, and not handed out: the claim's statement records it in the trail.
 */
export function claimSet(until: string, token: string, max: string): string {
  const lastLapsed = `(m.claimed_until is not null and m.send_count + 1 >= ${max})`;
  return `send_count = m.send_count + (m.claimed_until is not null)::int,
    status = case when ${lastLapsed} then 'abandoned' else m.status end,
    body = case when ${lastLapsed} then null else m.body end,
    last_error = case when ${lastLapsed} then '${LAPSED_ERROR}' else m.last_error end,
    claimed_until = case when ${lastLapsed} then null else ${until} end,
    lease_token = case when ${lastLapsed} then null else ${token} end`;
}

/**
 * The trail's entry for each message of `rows` (a CTE of the statement, returning org_id,
 * id, purpose, send_count and status, and channel with `channel`) that the statement
 * abandoned: in the statement of the change, as every outcome that ends a mail.
 */
export const abandonedEvents = (rows: string, at: string, opts: { channel?: boolean } = {}) => `insert into event (org_id, type, purpose, mail_id, details, occurred_at)
  select org_id, 'mail.abandoned', purpose, id, jsonb_build_object('attempts', send_count::text${opts.channel ? ", 'channel', channel" : ""}), ${at} from ${rows} where status = 'abandoned'`;

/** What a claim took: the messages to deliver, and the purposes of those it abandoned (claimSet). */
export interface Claimed<T> {
  items: T[];
  abandoned: Purpose[];
}

/**
 * Told, once per claim, the purposes of the messages it abandoned: also when a later
 * organization's statement failed, as each statement commits its own abandonments.
 */
export type AbandonedReport = (abandoned: readonly Purpose[]) => void;

// Mails are claimed oldest first, one organization at a time: every statement
// that takes locks names its organization, so that the outbox can be distributed
// by organization (Citus) without change.
// The organizations of the oldest due mails, as many rows as a batch takes (a
// grouping would read the whole backlog).
// The courier takes the 'smtp' channel only; the delivery API (store/delivery.ts) the others.
// From a floor ($3, rules/due-floor.ts) below which no mail is queued: the head of
// the index holds the dead entries of mails that have left the queue.
const DUE_SQL = planEachCall(`
select org_id from courier_message
where status = 'queued' and channel = 'smtp' and next_attempt_at >= $3 and next_attempt_at <= $1 and (claimed_until is null or claimed_until < $1)
order by next_attempt_at
limit $2`);

// The earliest due time of the queued SMTP mail, for the floor (the one look that walks the dead entries).
const OLDEST_DUE_SQL = planEachCall(`select min(next_attempt_at) as oldest from courier_message where status = 'queued' and channel = 'smtp'`);

// The channel is a parameter ($5, always 'smtp') so that a generic plan cannot take
// DUE_SQL's index of every organization's due SMTP mail (its predicate names the
// literal): it finds the organization's mails by the index that leads with org_id.
// The mails are chosen and locked once, in a materialized CTE, and then updated by
// key within the range of their ids (CLAIMED_RANGE): written as a join to a locking
// subquery, the claim was planned, on statistics that had not seen the organization,
// as a loop over all of its mails running the subquery for each (350,000 buffers for
// one claim, and a claim that took every due message at once: test/outbox-plans.test.ts).
const CLAIM_SQL = `
with c as materialized (
  select id from courier_message
  where org_id = $4 and status = 'queued' and channel = $5 and next_attempt_at >= $7 and next_attempt_at <= $1 and (claimed_until is null or claimed_until < $1)
  order by next_attempt_at
  limit $3
  for update skip locked
), claimed as (
  update courier_message m set ${claimSet("$2::timestamptz", "$6::uuid", "$8::int")}, updated_at = $1
  from c
  where m.org_id = $4 and m.id = c.id and ${CLAIMED_RANGE}
  returning m.org_id, m.id, m.purpose, m.recipient, m.body, m.key_id, m.send_count, m.status
), logged as (
  ${abandonedEvents("claimed", "$1")}
)
select * from claimed`;

// A statement names one organization's mails: by organization and an array of
// ids, which the primary key finds (over jsonb_to_recordset the planner assumed a
// hundred rows, and on a small or bloated table scanned the whole outbox: 1,275
// buffers to mark six mails sent, in the bench). A batch that spans organizations
// takes a statement per organization.
//
// The outcomes commit without waiting for the disk: a crash of PostgreSQL that
// forgets one leaves the mail queued, and it goes out again when its lease ends
// (at least once, as any courier crash already allows).
export const ASYNC_COMMIT = `(select set_config('synchronous_commit', 'off', true)) as async_commit`;

// Each statement names its mails by joining an array of their ids, which the planner
// takes for a few primary-key lookups; "id = any(...)", or a condition on status, let
// a generic plan made on an empty table's statistics take a bitmap scan or the
// partial index of the organization's queued mail (test/plans.test.ts). The join
// alone was not enough either: on statistics taken while an organization had few or
// no mails (a new one, or one the sample missed), the planner hashed the whole
// organization's outbox to find a few ids in it (all 6,000 of its mails read to mark
// 13 sent, test/outbox-plans.test.ts; in the bench, 3.7 ms and 1,178 buffers per
// statement in some runs against 0.55 ms and 180 in others). So each also bounds the
// ids by the smallest and the largest of them (ID_RANGE, above): time-ordered, a
// batch's ids lie close together, and whatever the plan, it reads no further than
// that range of the organization's mails (a retried mail keeps its older id, and
// widens the range).
//
// A claim's lease token (one per batch) and time name the claim: the renewal and the
// outcomes change only the mails their courier still holds. A courier whose lease ran
// out (it lost the database longer than the lease while its sends went on) finds its
// mails claimed by another, or already sent: its outcomes change nothing, rather than
// marking another courier's mail sent, or putting a sent one (its body wiped) back in
// the queue. Every outcome clears the token and claimed_until. The claim's time
// (updated_at, which claims and outcomes set and renewals leave) tells a claim of a
// courier of an earlier version, which sets no token, from the one before it.
const RENEW_SQL = `
update courier_message m set claimed_until = $2
from unnest($4::uuid[]) as r(id), ${ASYNC_COMMIT}
where m.org_id = $3 and m.id = r.id and ${ID_RANGE("m", "$5", "$6")} and m.lease_token = $1::uuid and m.updated_at = $7`;

// Each outcome that ends a mail is recorded in the trail by the same statement.
const SENT_SQL = `
with sent as (
  update courier_message m set status = 'sent', body = null, claimed_until = null, lease_token = null, last_error = null,
    send_count = m.send_count + 1, updated_at = $1
  from unnest($3::uuid[]) as s(id), ${ASYNC_COMMIT}
  where m.org_id = $2 and m.id = s.id and ${ID_RANGE("m", "$4", "$5")} and m.lease_token = $6::uuid and m.updated_at = $7
  returning m.org_id, m.id, m.purpose
), logged as (
  insert into event (org_id, type, purpose, mail_id, occurred_at)
  select org_id, 'mail.sent', purpose, id, $1 from sent
)
select count(*)::int as sent from sent`;

const FAILED_SQL = `
with failed as (
  update courier_message m set
    send_count = m.send_count + 1, last_error = f.error, claimed_until = null, lease_token = null, updated_at = $1,
    next_attempt_at = f.next_at,
    status = case when m.send_count + 1 >= $2 then 'abandoned' else 'queued' end,
    body = case when m.send_count + 1 >= $2 then null else m.body end
  from unnest($4::uuid[], $5::timestamptz[], $6::text[]) as f(id, next_at, error), ${ASYNC_COMMIT}
  where m.org_id = $3 and m.id = f.id and ${ID_RANGE("m", "$7", "$8")} and m.lease_token = $9::uuid and m.updated_at = $10
  returning m.org_id, m.id, m.status, m.purpose, m.send_count
), logged as (
  -- The error is not recorded: a mail server's answer may quote the address.
  ${abandonedEvents("failed", "$1")}
)
select id, status, purpose from failed`;

/** A claimed mail: its sealed body and what the courier needs to send and record it. */
export interface ClaimedMail {
  orgId: string;
  id: string;
  purpose: Purpose;
  recipient: string;
  /** Null only if something wrote a queued mail without one: the courier fails that mail, not its batch. */
  body: Buffer | null;
  keyId: string;
  sendCount: number;
}

/** A mail's key in the outbox. */
export interface MailKey {
  orgId: string;
  id: string;
}

/** Messages grouped by organization: each statement that changes them names one (Citus routes it to that organization's node). */
export function byOrganization<T extends { orgId: string }>(messages: readonly T[]): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const m of messages) {
    const group = groups.get(m.orgId);
    if (group) group.push(m);
    else groups.set(m.orgId, [m]);
  }
  return groups;
}

/**
 * The smallest and the largest of some ids, as PostgreSQL orders uuids (by their
 * bytes: lowercase hex compares alike), for ID_RANGE. The ids are in the canonical
 * hyphenated form: read from the database, or checked so by the delivery API's
 * validation (string.uuid), which takes either case.
 */
export function idBounds(ids: readonly string[]): [string, string] {
  let lo = ids[0].toLowerCase();
  let hi = lo;
  for (const raw of ids) {
    const id = raw.toLowerCase();
    if (id < lo) lo = id;
    if (id > hi) hi = id;
  }
  return [lo, hi];
}

/** A claim of the courier's: its lease token, and when it was made (its mails' updated_at until their outcome). */
export interface CourierClaim {
  lease: string;
  at: Date;
}

/** The earliest due time of the queued SMTP mail, or null with none. */
export async function oldestDueMail(sql: Sql): Promise<Date | null> {
  const [row] = await sql.query<{ oldest: string | Date | null }>(OLDEST_DUE_SQL);
  return row?.oldest ? new Date(row.oldest) : null;
}

/** Before every mail's due time: a look from it reads the whole head of the index. */
export const ANY_TIME = new Date(0);

/**
 * Claims up to `size` mails due at the claim's time, from `dueFrom` (a floor below
 * which no mail is queued: rules/due-floor.ts) on, for its lease, which ends at `until`.
 * What it abandoned is told to `reportAbandoned`, whether or not the claim then fails.
 */
export async function claimMails(
  sql: Sql,
  claim: CourierClaim,
  until: Date,
  size: number,
  maxAttempts: number,
  dueFrom: Date = ANY_TIME,
  reportAbandoned?: AbandonedReport,
): Promise<Claimed<ClaimedMail>> {
  const { lease, at: now } = claim;
  const due = new Set((await sql.query<{ org_id: string }>(DUE_SQL, [now, size, dueFrom])).map((r) => r.org_id));
  const claimed: ClaimedMail[] = [];
  const abandoned: Purpose[] = [];
  try {
    for (const org_id of due) {
      if (claimed.length + abandoned.length >= size) break;
      let rows: Row[];
      try {
        rows = await sql.query(CLAIM_SQL, [now, until, size - claimed.length - abandoned.length, org_id, "smtp", lease, dueFrom, maxAttempts]);
      } catch (err) {
        // What was claimed in other organizations is given back rather than left leased to nobody
        // until its lease ends (a failing database keeps it leased instead: the lease brings it back).
        await releaseClaims(sql, claim, claimed).catch(() => {});
        throw err;
      }
      for (const m of rows) {
        if (m.status === "abandoned") abandoned.push(m.purpose);
        else claimed.push({ orgId: m.org_id, id: m.id, purpose: m.purpose, recipient: m.recipient, body: m.body && bytes(m.body), keyId: m.key_id, sendCount: m.send_count });
      }
    }
  } finally {
    if (abandoned.length) reportAbandoned?.(abandoned);
  }
  return { items: claimed, abandoned };
}

/** Extends the lease of the mails the claim still holds. */
export async function renewClaims(sql: Sql, claim: CourierClaim, until: Date, keys: readonly MailKey[]): Promise<void> {
  for (const [orgId, mails] of byOrganization(keys)) {
    const ids = mails.map((m) => m.id);
    await sql.query(RENEW_SQL, [claim.lease, until, orgId, ids, ...idBounds(ids), claim.at]);
  }
}

// Mails a stopping courier did not start, given back for the next claim to take at once.
const RELEASE_SQL = `
update courier_message m set claimed_until = null, lease_token = null
from unnest($3::uuid[]) as r(id), ${ASYNC_COMMIT}
where m.org_id = $2 and m.id = r.id and ${ID_RANGE("m", "$4", "$5")} and m.lease_token = $1::uuid and m.updated_at = $6`;

/** Gives back the mails the claim still holds, untried. */
export async function releaseClaims(sql: Sql, claim: CourierClaim, keys: readonly MailKey[]): Promise<void> {
  for (const [orgId, mails] of byOrganization(keys)) {
    const ids = mails.map((m) => m.id);
    await sql.query(RELEASE_SQL, [claim.lease, orgId, ids, ...idBounds(ids), claim.at]);
  }
}

/** Marks the mails the claim still holds sent, wiping their bodies; answers how many it marked. */
export async function markSent(sql: Sql, now: Date, claim: CourierClaim, keys: readonly MailKey[]): Promise<number> {
  let marked = 0;
  for (const [orgId, mails] of byOrganization(keys)) {
    const ids = mails.map((m) => m.id);
    const rows = await sql.query<{ sent: number }>(SENT_SQL, [now, orgId, ids, ...idBounds(ids), claim.lease, claim.at]);
    marked += rows[0]?.sent ?? 0;
  }
  return marked;
}

/**
 * Records failed attempts of the mails the claim still holds: retried at
 * `nextAt`, or abandoned (body wiped) at the last attempt. Answers each one's status.
 */
export async function markFailed(
  sql: Sql,
  now: Date,
  maxAttempts: number,
  claim: CourierClaim,
  failed: readonly (MailKey & { nextAt: Date; error: string })[],
): Promise<{ id: string; status: MailStatus; purpose: Purpose }[]> {
  const outcomes: { id: string; status: MailStatus; purpose: Purpose }[] = [];
  for (const [orgId, mails] of byOrganization(failed)) {
    const ids = mails.map((m) => m.id);
    const rows = await sql.query<{ id: string; status: MailStatus; purpose: Purpose }>(FAILED_SQL, [
      now,
      maxAttempts,
      orgId,
      ids,
      mails.map((m) => m.nextAt.toISOString()),
      mails.map((m) => m.error),
      ...idBounds(ids),
      claim.lease,
      claim.at,
    ]);
    outcomes.push(...rows);
  }
  return outcomes;
}

/** A mail as the admin API lists it: everything but its body. */
export interface MailRecord extends Cursor {
  orgId: string;
  recipient: string;
  subject: string;
  purpose: string;
  status: MailStatus;
  channel: Channel;
  sendCount: number;
  lastError: string | null;
  updatedAt: Date;
}

/**
 * The statements of a page of an organization's mails, newest first: one per
 * status (or all) and per page (the first, or one after a cursor), each stating
 * its status and cursor as conditions an index can start at, so that a page
 * reads its own rows: the organization's index in creation order
 * (courier_message_org_created_idx), or for the few abandoned mails their own
 * partial index. One statement for every case read the organization's whole
 * history to find its few abandoned mails, and read past every earlier page.
 */
const LIST_MAILS_SQL = Object.fromEntries(
  (["", ...mailStatuses] as const).map((status) => {
    const text = (after: boolean) =>
      `select org_id, id, recipient, subject, purpose, status, channel, send_count, last_error, created_at, updated_at
       from courier_message
       where org_id = $1${status ? ` and status = '${status}'` : ""}${after ? " and (created_at, id) < ($3::timestamptz, $4::uuid)" : ""}
       order by created_at desc, id desc
       limit $2`;
    return [status, { first: text(false), after: text(true) }];
  }),
) as Record<MailStatus | "", { first: string; after: string }>;

/** A page of an organization's mails, newest first, after `cursor`; one more than `size` tells that another page follows. */
export async function listMails(sql: Sql, orgId: string, status: MailStatus | "", cursor: Cursor | undefined, size: number): Promise<MailRecord[]> {
  const statements = LIST_MAILS_SQL[status];
  const rows = cursor
    ? await sql.query(statements.after, [orgId, size + 1, cursor.createdAt, cursor.id])
    : await sql.query(statements.first, [orgId, size + 1]);
  return rows.map((r) => ({
    orgId: r.org_id,
    id: r.id,
    recipient: r.recipient,
    subject: r.subject,
    purpose: r.purpose,
    status: r.status,
    channel: r.channel,
    sendCount: r.send_count,
    lastError: r.last_error,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  }));
}

export interface QueueStats {
  depth: number;
  oldestQueuedAt: Date | null;
}

// Across organizations, by the partial indexes of queued messages, at each scrape of the metrics.
const QUEUE_STATS_SQL = planEachCall("select channel, count(*)::int as depth, min(created_at) as oldest from courier_message where status = 'queued' group by channel");

/** Queued messages of every organization, per channel (each one there, empty or not): how many, and when the oldest was queued. */
export async function queueStats(sql: Sql): Promise<Record<Channel, QueueStats>> {
  const rows = await sql.query(QUEUE_STATS_SQL);
  const stats = Object.fromEntries(channels.map((c) => [c, { depth: 0, oldestQueuedAt: null }])) as Record<Channel, QueueStats>;
  for (const r of rows) if (r.channel in stats) stats[r.channel as Channel] = { depth: Number(r.depth), oldestQueuedAt: r.oldest ? new Date(r.oldest) : null };
  return stats;
}
