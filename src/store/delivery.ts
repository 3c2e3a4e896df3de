// The delivery API's statements on the outbox (store/outbox.ts): messages of the
// channels the operator's own services deliver ('mail_api', 'sms') are claimed
// with FOR UPDATE SKIP LOCKED and a lease named by a token, as the courier claims
// its 'smtp' ones, and only that lease acks or fails them. Every statement that
// takes locks names its organization (Citus), as the courier's do.
import type { ApiChannel, MailStatus } from "../domain/outbox.ts";
import type { Purpose } from "../domain/purpose.ts";
import { bytes, planEachCall, type Row, type Sql } from "./sql.ts";
import { abandonedEvents, ANY_TIME, ASYNC_COMMIT, byOrganization, CLAIMED_RANGE, claimSet, ID_RANGE, idBounds, type AbandonedReport, type Claimed } from "./outbox.ts";

// The organizations of the oldest due messages of these channels (reads across
// organizations without locking, as the courier's DUE_SQL), by the index of the
// API's due messages ("channel <> 'smtp'" names it).
// From a floor ($4), as the courier's.
const DUE_SQL = planEachCall(`
select org_id from courier_message
where status = 'queued' and channel <> 'smtp' and channel = any($3::text[]) and next_attempt_at >= $4 and next_attempt_at <= $1 and (claimed_until is null or claimed_until < $1)
order by next_attempt_at
limit $2`);

// The earliest due time of the queued messages of some of the API's channels, for the floor (rules/due-floor.ts).
const OLDEST_DUE_SQL = planEachCall(`select min(next_attempt_at) as oldest from courier_message where status = 'queued' and channel <> 'smtp' and channel = any($1::text[])`);

// By the organization's index of due messages: "channel = any($6)" alone does not
// name the partial index of every organization's, so no generic plan takes it. Chosen
// and locked once, then updated by key, as the courier's claim (store/outbox.ts).
const CLAIM_SQL = `
with c as materialized (
  select id from courier_message
  where org_id = $4 and status = 'queued' and channel = any($6::text[]) and next_attempt_at >= $7 and next_attempt_at <= $1 and (claimed_until is null or claimed_until < $1)
  order by next_attempt_at
  limit $3
  for update skip locked
), claimed as (
  update courier_message m set ${claimSet("$2::timestamptz", "$5::uuid", "$8::int")}, updated_at = $1
  from c
  where m.org_id = $4 and m.id = c.id and ${CLAIMED_RANGE}
  returning m.org_id, m.id, m.channel, m.purpose, m.recipient, m.body, m.key_id, m.send_count, m.status
), logged as (
  ${abandonedEvents("claimed", "$1", { channel: true })}
)
select * from claimed`;

// Outcomes commit without waiting for the disk, as the courier's: one a crash of
// PostgreSQL forgets leaves the message queued, claimed again when its lease ends.

// Held: still claimed by this lease (its time may have run out, but no other claim
// has taken it). A lease token is set only while a claim holds a queued message
// (every outcome clears it), so it alone says so; a "status = 'queued'" here would
// let a generic plan take the partial index of the organization's due messages
// instead of the primary key. The messages are joined by id from their arrays, which
// the primary key finds one by one: with "id = any($3)" beside the organization, a
// generic plan on empty statistics read the organization's index by creation time
// and filtered its ids. The ids are bounded too, as the courier's (ID_RANGE in outbox.ts).
const ACK_SQL = `
with acked as (
  update courier_message m set status = 'sent', body = null, claimed_until = null, lease_token = null, last_error = null,
    send_count = m.send_count + 1, updated_at = $1
  from unnest($3::uuid[], $4::uuid[]) as a(id, token), ${ASYNC_COMMIT}
  where m.org_id = $2 and m.id = a.id and ${ID_RANGE("m", "$5", "$6")} and m.lease_token = a.token
  returning m.org_id, m.id, m.purpose, m.channel
), logged as (
  -- The trail, as for the courier's mails: in the statement of the change.
  insert into event (org_id, type, purpose, mail_id, details, occurred_at)
  select org_id, 'mail.sent', purpose, id, jsonb_build_object('channel', channel), $1 from acked
)
select id, purpose from acked`;

// Retried after the courier's backoff (exponential from $7 ms, capped at $8 ms,
// with jitter), or abandoned, its body wiped, at the last attempt or when the
// worker says it can never be delivered.
const FAIL_SQL = `
with failed as (
  update courier_message m set
    send_count = m.send_count + 1, last_error = f.error, claimed_until = null, lease_token = null, updated_at = $1,
    next_attempt_at = $1::timestamptz + make_interval(secs => least($8::float8, $7::float8 * power(2, least(m.send_count, 40))) * (0.75 + random() * 0.5) / 1000),
    status = case when m.send_count + 1 >= $2 or f.permanent then 'abandoned' else 'queued' end,
    body = case when m.send_count + 1 >= $2 or f.permanent then null else m.body end
  from unnest($4::uuid[], $5::uuid[], $6::text[], $9::boolean[]) as f(id, token, error, permanent), ${ASYNC_COMMIT}
  where m.org_id = $3 and m.id = f.id and ${ID_RANGE("m", "$10", "$11")} and m.lease_token = f.token
  returning m.org_id, m.id, m.status, m.purpose, m.channel, m.send_count, m.next_attempt_at
), logged as (
  -- The worker's error is not recorded: it may quote the recipient.
  ${abandonedEvents("failed", "$1", { channel: true })}
)
select id, status, purpose, channel, next_attempt_at from failed`;

/** A claimed message: its sealed body and what the worker needs. */
export interface ClaimedMessage {
  orgId: string;
  id: string;
  channel: ApiChannel;
  purpose: Purpose;
  recipient: string;
  body: Buffer;
  keyId: string;
  sendCount: number;
}

/** A message as a lease holds it. */
export interface LeasedKey {
  orgId: string;
  id: string;
  leaseToken: string;
}

/** The earliest due time of the queued messages of these channels, or null with none. */
export async function oldestDueMessage(sql: Sql, channels: readonly ApiChannel[]): Promise<Date | null> {
  const [row] = await sql.query<{ oldest: string | Date | null }>(OLDEST_DUE_SQL, [channels]);
  return row?.oldest ? new Date(row.oldest) : null;
}

/**
 * Claims up to `size` due messages of these channels, from `dueFrom` on (as the
 * courier's claimMails), under the lease `token`, until `until`. Once `signal` has
 * aborted, no statement is started (what was claimed before is answered). What it
 * abandoned is told to `reportAbandoned`, whether or not the claim then fails.
 */
export async function claimMessages(
  sql: Sql,
  now: Date,
  until: Date,
  size: number,
  channels: readonly ApiChannel[],
  token: string,
  maxAttempts: number,
  dueFrom: Date = ANY_TIME,
  signal?: AbortSignal,
  reportAbandoned?: AbandonedReport,
): Promise<Claimed<ClaimedMessage>> {
  const due = new Set((await sql.query<{ org_id: string }>(DUE_SQL, [now, size, channels, dueFrom], signal)).map((r) => r.org_id));
  const claimed: ClaimedMessage[] = [];
  const abandoned: Purpose[] = [];
  try {
    for (const orgId of due) {
      if (claimed.length + abandoned.length >= size) break;
      let rows: Row[];
      try {
        rows = await sql.query(CLAIM_SQL, [now, until, size - claimed.length - abandoned.length, orgId, token, channels, dueFrom, maxAttempts], signal);
      } catch (err) {
        // Not started, the call being over (sql.query throws its signal's reason): what was
        // claimed before is answered, for the caller to give back. Anything else is an error.
        if (signal?.aborted && err === signal.reason && claimed.length) break;
        // What was claimed in other organizations is given back rather than left leased to nobody
        // until its lease ends (a failing database keeps it leased instead: the lease brings it back).
        await releaseMessages(sql, claimed.map((m) => ({ orgId: m.orgId, id: m.id, leaseToken: token }))).catch(() => {});
        throw err;
      }
      for (const m of rows) {
        if (m.status === "abandoned") {
          abandoned.push(m.purpose);
          continue;
        }
        claimed.push({
          orgId: m.org_id,
          id: m.id,
          channel: m.channel,
          purpose: m.purpose,
          recipient: m.recipient,
          body: bytes(m.body),
          keyId: m.key_id,
          sendCount: m.send_count,
        });
      }
    }
  } finally {
    if (abandoned.length) reportAbandoned?.(abandoned);
  }
  return { items: claimed, abandoned };
}

// Given back unanswered: messages a claim took but could not hand out (they did not
// fit its answer), claimable again at once, their attempt not counted.
const RELEASE_SQL = `
update courier_message m set claimed_until = null, lease_token = null
from unnest($2::uuid[], $3::uuid[]) as r(id, token), ${ASYNC_COMMIT}
where m.org_id = $1 and m.id = r.id and ${ID_RANGE("m", "$4", "$5")} and m.lease_token = r.token`;

/** Gives back messages their leases still hold, for the next claim to take. */
export async function releaseMessages(sql: Sql, keys: readonly LeasedKey[]): Promise<void> {
  for (const [orgId, items] of byOrganization(keys)) {
    const ids = items.map((m) => m.id);
    await sql.query(RELEASE_SQL, [orgId, ids, items.map((m) => m.leaseToken), ...idBounds(ids)]);
  }
}

/** Marks the messages their leases still hold sent, wiping their bodies; answers those. */
export async function ackMessages(sql: Sql, now: Date, keys: readonly LeasedKey[]): Promise<{ id: string; purpose: Purpose }[]> {
  const acked: { id: string; purpose: Purpose }[] = [];
  for (const [orgId, items] of byOrganization(keys)) {
    const ids = items.map((m) => m.id);
    acked.push(...(await sql.query<{ id: string; purpose: Purpose }>(ACK_SQL, [now, orgId, ids, items.map((m) => m.leaseToken), ...idBounds(ids)])));
  }
  return acked;
}

/** A failure recorded: retried at `nextAttemptAt`, or abandoned. */
export interface FailedMessage {
  id: string;
  status: MailStatus;
  purpose: Purpose;
  channel: ApiChannel;
  nextAttemptAt: Date;
}

/** Records failed deliveries of messages their leases still hold: retried after the backoff, or abandoned (body wiped) at the last attempt or when permanent. */
export async function failMessages(
  sql: Sql,
  now: Date,
  retry: { maxAttempts: number; backoffBaseMs: number; backoffMaxMs: number },
  failed: readonly (LeasedKey & { error: string; permanent?: boolean })[],
): Promise<FailedMessage[]> {
  const out: FailedMessage[] = [];
  for (const [orgId, items] of byOrganization(failed)) {
    const ids = items.map((m) => m.id);
    const rows = await sql.query<{ id: string; status: MailStatus; purpose: Purpose; channel: ApiChannel; next_attempt_at: string | Date }>(FAIL_SQL, [
      now,
      retry.maxAttempts,
      orgId,
      ids,
      items.map((m) => m.leaseToken),
      items.map((m) => m.error),
      retry.backoffBaseMs,
      retry.backoffMaxMs,
      items.map((m) => m.permanent === true),
      ...idBounds(ids),
    ]);
    out.push(...rows.map((r) => ({ id: r.id, status: r.status, purpose: r.purpose, channel: r.channel, nextAttemptAt: new Date(r.next_attempt_at) })));
  }
  return out;
}
