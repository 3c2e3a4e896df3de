// The statements of codes: issuing (with the mail or notice and the limits of the
// send, in one statement), verifying by username (in one statement), the attempt
// of a verification by flow id and what settles it, and invalidation. Hand-tuned SQL on the hot paths, each behind a function that
// takes a typed object; the rules for codes are in rules/codes/engine.ts. Each
// statement that changes a code also writes its event of the trail (store/events.ts),
// as one more data-modifying CTE: it commits with the change, or not at all.
import type { Audit } from "../domain/events.ts";
import type { Identity, IdentityState } from "../domain/identity.ts";
import type { Channel } from "../domain/outbox.ts";
import type { Purpose } from "../domain/purpose.ts";
import type { Window } from "../domain/rate-limits.ts";
import { identityOfRow } from "./identities.ts";
import { countHitsSql, uncountHits, windowsJson, windowVerdictsSql } from "./rate-limits.ts";
import { bytes, isUniqueViolation, type Sql } from "./sql.ts";

/** A sealed mail, ready for the outbox (sealed under the key `mailKeyId` names). */
export interface SealedMail {
  id: string;
  subject: string;
  body: Buffer;
  /** How it leaves: by the courier (`smtp`) or through the delivery API (`mail_api`). */
  channel: Channel;
}

export interface NewCode {
  orgId: string;
  /**
   * The identity: by normalized username, or by id, with its normalized username
   * (named by both of its unique keys, so that no plan can find it by the
   * organization alone: test/stale-statistics.test.ts).
   */
  target: { usernameNormalized: string; username: string } | { identityId: string; usernameNormalized: string };
  /** Only an identity in this state gets the code. */
  requiredState: IdentityState;
  id: string;
  purpose: Purpose;
  hash: Buffer;
  /** What the hash was taken over besides the code: 1, the row id; 2, the code's owner (rules/codes/hash.ts). */
  hashInput: 1 | 2;
  keyId: string;
  now: Date;
  expiresAt: Date;
  maxAttempts: number;
  /** '' (unbound), 'admin', or 'b:' and the SHA-256 of the application's binding. */
  binding: string;
  /** Bound codes live at once per identity and purpose, at most (slots). */
  slots: number;
  /** The send's rate-limit windows, counted in the same statement: over any, nothing is issued. */
  limits: readonly Window[];
  /** The mail that carries the code, queued when the code is. */
  mail?: SealedMail & {
    /** The code as a short text for the `sms` channel (sealed for the mail's row): queued instead of the mail when the identity has a phone number. */
    text?: Buffer;
  };
  /** A notice to the username itself, when it has no identity (`unknown`) or an active one (`active`). */
  notice?: SealedMail & { when: "unknown" | "active" };
  /** Creates a pending identity with this id when the username has none. */
  createPendingId?: string;
  /** The MAIL_ENCRYPTION_KEYS key the mails are sealed with. */
  mailKeyId: string;
  /** Recorded with the code.issued event (and identity.created) the statement writes. */
  audit?: Audit;
}

export interface IssueResult {
  issued: boolean;
  /** The channels of the messages (the code's, a notice) it queued: who has messages to claim. */
  queuedOn: Channel[];
  /** Over a limit: when the send would be allowed. */
  retryAt: Date | null;
  /** Refused after it counted (it raced other sends past the check), why its hits could not be taken back. */
  takeBackError?: Error;
}

// The rate-limit counters are part of the statement, so that every send, for a
// known username or not, is one statement with one commit.
const issueSql = (by: "username" | "id", bound: boolean) => `
with counted as (${countHitsSql(16, { together: true })}
), windows as (${windowVerdictsSql(16)}
), verdict as (
  select coalesce(bool_and(not over), true) as allowed, max(case when over then end_at end) as retry_at from windows
), created as (
  insert into identity (org_id, id, username, username_normalized, state, created_at)
  select $1, $19::uuid, $20, $2, 'pending', $8
  where $21::boolean and (select allowed from verdict)
  on conflict (org_id, username_normalized) do nothing
  returning org_id, id, username, state, phone_number
), found as (
  select org_id, id, username, state, phone_number from identity
  where org_id = $1 and ${by === "username" ? "username_normalized = $2" : "id = $2::uuid and username_normalized = $20"}
    and (select allowed from verdict)
  union all
  select org_id, id, username, state, phone_number from created
), ident as (
  select org_id, id, username, phone_number from found where state = $3
), ${bound ? BOUND_INSERT : UNBOUND_INSERT}, queued as (
  -- The code's text to the identity's phone number when the purpose's channel is
  -- 'sms' ($30) and it has one; else the mail, on its channel ($28), to the username.
  insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select ident.org_id, $11::uuid, case when d.sms then 'sms' else $28::text end, $5,
    case when d.sms then ident.phone_number else ident.username end, $12,
    case when d.sms then $29::bytea else $13::bytea end, $14, 'queued', 0, $8, $8, $8
  from ident join issued on issued.identity_id = ident.id
    cross join lateral (select $30::boolean and ident.phone_number is not null as sms) d
  where $15::boolean
  returning id, channel
), noticed as (
  insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select $1, $22::uuid, $31::text, $5, $23, $24, $25, $14, 'queued', 0, $8, $8, $8
  where (select allowed from verdict) and (
    ($26 = 'unknown' and not exists (select 1 from found)) or
    ($26 = 'active' and exists (select 1 from found where state = 'active')))
  returning channel
), logged as (
  -- The trail, in the statement of the change: an issued code (with the mail
  -- that carries it), and a self-service sign-up's new identity.
  insert into event (org_id, type, purpose, identity_id, code_id, mail_id, actor, request_id, occurred_at)
  select $1, 'code.issued', $5, identity_id, $4::uuid, (select id from queued), nullif($32::text, ''), nullif($33::text, ''), $8 from issued
  union all
  select org_id, 'identity.created', null, id, null, null, nullif($32::text, ''), nullif($33::text, ''), $8 from created
)
select (select count(*) from issued)::int as issued,
  array(select channel from queued union select channel from noticed)::text[] as queued_on,
  (select retry_at from verdict) as retry_at,
  -- Refused, yet counted: it raced another request past the check of its windows.
  array(select key from counted where not (select allowed from verdict))::text[] as uncount`;

// One live code per identity, purpose and binding: a new one takes its place.
const UNBOUND_INSERT = `issued as (
  insert into code (org_id, id, identity_id, purpose, binding, code_hash, hash_input, key_id, created_at, expires_at, attempts, max_attempts)
  select org_id, $4::uuid, id, $5, $17, $6, $27::smallint, $7, $8, $9, 0, $10 from ident
  where $18::int > 0 -- (the slots of bound codes: always true, named so that every parameter has a type)
  on conflict (org_id, identity_id, purpose, binding) where dead_at is null do update set
    id = excluded.id, code_hash = excluded.code_hash, hash_input = excluded.hash_input, key_id = excluded.key_id,
    created_at = excluded.created_at, expires_at = excluded.expires_at, attempts = 0, max_attempts = excluded.max_attempts
  returning identity_id
)`;

// A flow's new send replaces its own code; another flow's code takes a free
// slot, or the slot of an expired code; with none free nothing is issued.
// Each names the identity by its whole key (organization and id), so that no plan
// can reach codes through an index by purpose alone (a skip scan over every
// organization's codes), and Citus routes it to the organization's node.
const BOUND_INSERT = `same as (
  update code c set id = $4::uuid, code_hash = $6, hash_input = $27::smallint, key_id = $7, created_at = $8, expires_at = $9, attempts = 0, max_attempts = $10
  where c.org_id = $1 and c.identity_id = (select id from ident) and c.purpose = $5 and c.binding = $17 and c.dead_at is null
  returning c.identity_id
), free as (
  select s.slot from ident i, generate_series(0, $18::int - 1) as s(slot)
  where not exists (select 1 from same)
    and not exists (select 1 from code c where c.org_id = $1 and c.identity_id = (select id from ident) and c.purpose = $5
                    and c.slot = s.slot and c.dead_at is null and c.expires_at > $8)
  order by s.slot limit 1
), inserted as (
  insert into code (org_id, id, identity_id, purpose, binding, slot, code_hash, hash_input, key_id, created_at, expires_at, attempts, max_attempts)
  select i.org_id, $4::uuid, i.id, $5, $17, f.slot, $6, $27::smallint, $7, $8, $9, 0, $10 from ident i, free f
  on conflict (org_id, identity_id, purpose, slot) where dead_at is null and slot is not null do update set
    id = excluded.id, binding = excluded.binding, code_hash = excluded.code_hash, hash_input = excluded.hash_input, key_id = excluded.key_id,
    created_at = excluded.created_at, expires_at = excluded.expires_at, attempts = 0, max_attempts = excluded.max_attempts
    where code.expires_at <= $8
  returning identity_id
), issued as (
  select identity_id from same union all select identity_id from inserted
)`;

// Each variant's text is built once: a text built per call cost 9 µs of a send to
// build and to find its prepared statement by (a 5 kB string hashed and compared).
const ISSUE_SQL = {
  username: { unbound: issueSql("username", false), bound: issueSql("username", true) },
  id: { unbound: issueSql("id", false), bound: issueSql("id", true) },
};

/**
 * Issues a code, with its mail or notice, in one statement. A concurrent send of
 * the same flow that takes its place first makes this one issue nothing.
 */
export async function issueCode(sql: Sql, code: NewCode, signal?: AbortSignal): Promise<IssueResult> {
  const byId = "identityId" in code.target;
  try {
    const [row] = await sql.query<{ issued: number; queued_on: Channel[]; retry_at: string | Date | null; uncount: string[] }>(
      ISSUE_SQL[byId ? "id" : "username"][code.binding.startsWith("b:") ? "bound" : "unbound"],
      [
        code.orgId,
        "identityId" in code.target ? code.target.identityId : code.target.usernameNormalized,
        code.requiredState,
        code.id,
        code.purpose,
        code.hash,
        code.keyId,
        code.now,
        code.expiresAt,
        code.maxAttempts,
        code.mail?.id ?? code.id,
        code.mail?.subject ?? "",
        code.mail?.body ?? null,
        code.mailKeyId,
        code.mail !== undefined,
        windowsJson(code.limits),
        code.binding,
        code.slots,
        code.createPendingId ?? code.id,
        // The username as typed (a pending identity's), or the normalized one of an identity named by id.
        "username" in code.target ? code.target.username : code.target.usernameNormalized,
        code.createPendingId !== undefined,
        code.notice?.id ?? code.id,
        "username" in code.target ? code.target.username : "",
        code.notice?.subject ?? "",
        code.notice?.body ?? null,
        code.notice?.when ?? "",
        code.hashInput,
        code.mail?.channel ?? "smtp",
        code.mail?.text ?? null,
        code.mail?.text !== undefined,
        code.notice?.channel ?? "smtp",
        code.audit?.actor ?? "",
        code.audit?.requestId ?? "",
      ],
      signal,
    );
    const takeBackError = await uncountHits(sql, code.orgId, code.limits, row.uncount);
    return { issued: row.issued > 0, queuedOn: row.queued_on, retryAt: row.retry_at ? new Date(row.retry_at) : null, takeBackError };
  } catch (err) {
    if (isUniqueViolation(err)) return { issued: false, queuedOn: [], retryAt: null };
    throw err;
  }
}

/**
 * A guess's gate on its rate-limit windows: the guess is counted first, by the
 * upsert of each window's counter (countHitsSql, `inc` hits), which waits for the
 * guess before it on that counter and answers the count after this one: concurrent
 * guesses that count are decided one after another, each seeing the others' counts
 * (read from the statement's snapshot, twenty guesses at once at an account's four
 * live codes all passed a limit of three: test/abuse.test.ts). This reads, from the
 * counts the upsert `hits` answered, until when the windows of `$param` were over
 * their limits before this guess: the latest end of those that were. A window the
 * gate did not count (a right code, which counts nothing) is read from the
 * snapshot, by its key: a guess that adds nothing is decided as if before the
 * guesses still in flight. So is one the upsert left alone, over its maximum in
 * that snapshot already.
 */
const GATE_OVER_SQL = (param: string, hits: string, inc: string) => `
  select max(w.end_at) as until
  from jsonb_to_recordset(${param}::jsonb) as w(key text, start timestamptz, end_at timestamptz, max int)
  left join ${hits} h on h.key = w.key
  where coalesce(h.hits - ${inc}, (select l.hits from rate_limit l where l.org_id = $1 and l.key = w.key and l.window_start = w.start), 0) >= w.max`;

// Counts the attempt before comparing, so that concurrent guesses can never
// exceed the limit; the right code also counts as an attempt. A client address
// over its limit of wrong codes gets no attempt at all (blocked_until says till
// when); a username over its limit only gets the first attempt of a fresh code.
// Each statement finds its rows by key (the identity by username, then its live
// code through the partial index), so that a generic prepared plan cannot fall
// back to scanning the organization's codes.
//
// Its commit does not wait for the disk (synchronous_commit off for this
// transaction only): a live code's attempt writes and a missing one does not, and
// a flush to disk would tell them apart by a millisecond. A crash of PostgreSQL
// could forget the attempts of its last moments.
const attemptSql = (by: "username" | "flow") => {
  const target =
    by === "username"
      ? `c.org_id = $1 and c.purpose = $3 and c.binding = $6 and c.dead_at is null and c.identity_id = (
           select id from identity where org_id = $1 and username_normalized = $2 and state = $4)`
      : // A flow id names an admin-issued recovery code (its index holds live recovery codes only).
        `c.id = $2::uuid and c.purpose = 'recovery' and c.binding = 'admin' and c.dead_at is null and ($1 = '' or c.org_id = $1) and $3 = 'recovery'
         and exists (select 1 from identity i where i.org_id = c.org_id and i.id = c.identity_id and i.state = $4
                     and ($6 = '' or i.username_normalized = $6))`;
  // Each window is read through its gate (GATE_OVER_SQL), counting nothing: the
  // settlement counts, in the same transaction (rules/codes/engine.ts), so the
  // counters stay locked from this read to that count (those at their maximum
  // already are not upserted, nor locked: nothing can bring them back under it).
  return `
with address_hits as (${countHitsSql(7, { inc: "0" })}
), address_blocked as (${GATE_OVER_SQL("$7", "address_hits", "0")}
), username_hits as (${countHitsSql(8, { inc: "0" })}
), username_over as (${GATE_OVER_SQL("$8", "username_hits", "0")}
), attempted as (
  update code c set attempts = c.attempts + 1
  where ${target}
    and c.expires_at > $5 and c.attempts < c.max_attempts
    and ((select until from username_over) is null or c.attempts = 0)
    and (select until from address_blocked) is null
  returning c.org_id, c.id, c.identity_id, c.purpose, c.code_hash, c.key_id, c.attempts, c.max_attempts
)
select (select until from address_blocked) as blocked_until, a.*,
  (select i.username_normalized from identity i where i.org_id = a.org_id and i.id = a.identity_id) as username_normalized
from (select set_config('synchronous_commit', 'off', true)) as async_commit, (select 1) as one left join attempted a on true`;
};

export interface AttemptRequest {
  orgId: string;
  purpose: Purpose;
  /** Only an identity in this state. */
  requiredState: IdentityState;
  /** By username and binding, or an administrator's code by its flow id (and, optionally, the username it must belong to). */
  target: { usernameNormalized: string; binding: string } | { flowId: string; usernameNormalized: string };
  now: Date;
  /** Wrong codes per client address: over, no attempt at all. */
  addressWindows: readonly Window[];
  /** Wrong codes per username: over, a code takes only its first attempt. */
  usernameWindows: readonly Window[];
}

const ATTEMPT_SQL = { username: attemptSql("username"), flow: attemptSql("flow") };

/** The live code an attempt was counted on. */
export interface LiveCode {
  orgId: string;
  id: string;
  identityId: string;
  purpose: Purpose;
  hash: Buffer;
  keyId: string;
  attempts: number;
  maxAttempts: number;
  /** Its identity's normalized username. */
  usernameNormalized: string;
}

/** Counts an attempt on the live code the request names; answers it, or that the client address is blocked. */
export async function attemptCode(sql: Sql, req: AttemptRequest, signal?: AbortSignal): Promise<{ blockedUntil: Date | null; code: LiveCode | undefined }> {
  const byFlow = "flowId" in req.target;
  const [row] = await sql.query(
    ATTEMPT_SQL[byFlow ? "flow" : "username"],
    "flowId" in req.target
      ? [req.orgId, req.target.flowId, req.purpose, req.requiredState, req.now, req.target.usernameNormalized, windowsJson(req.addressWindows), "[]"]
      : [req.orgId, req.target.usernameNormalized, req.purpose, req.requiredState, req.now, req.target.binding, windowsJson(req.addressWindows), windowsJson(req.usernameWindows)],
    signal,
  );
  const code: LiveCode | undefined = row.id
    ? {
        orgId: row.org_id,
        id: row.id,
        identityId: row.identity_id,
        purpose: row.purpose,
        hash: bytes(row.code_hash),
        keyId: row.key_id,
        attempts: row.attempts,
        maxAttempts: row.max_attempts,
        usernameNormalized: row.username_normalized ?? "",
      }
    : undefined;
  return { blockedUntil: row.blocked_until ? new Date(row.blocked_until) : null, code };
}

/** Placeholders of SETTLE_SQL when there was no code to settle. */
const NO_CODE = "00000000-0000-0000-0000-000000000000";

// The live code found by the attempt ($1 organization, $2 id), named also by the whole
// key of the live-code index ($3 identity, $4 purpose): with the id alone, a generic
// plan made on stale statistics took that partial index by organization and
// filtered every live code of it.
const LIVE_CODE = `org_id = $1 and id = $2::uuid and identity_id = $3::uuid and purpose = $4 and dead_at is null`;

/**
 * What follows every attempt, in one statement of one shape whatever happened:
 * `consume` the right code (activating a pending identity for registration),
 * `kill` a code out of attempts, or nothing; and count the failure windows given.
 * Only a consume waits for the disk: it is what a code's single use rests on
 * (through a crash of PostgreSQL too). Counting a failure does not: its cost
 * would otherwise tell a live code from none, and an account from none.
 */
const SETTLE_SQL = `
with durability as (
  select set_config('synchronous_commit', case when $6 = 'consume' then 'on' else 'off' end, true)
), consumed as (
  -- "dead_at is null" belongs to the update itself: a concurrent consume that
  -- committed first is seen by the re-check of these conditions, and this one finds nothing.
  update code set consumed_at = $5, dead_at = $5
  where $6 = 'consume' and ${LIVE_CODE}
  returning identity_id
), killed as (
  update code set dead_at = $5
  where $6 = 'kill' and ${LIVE_CODE}
  returning id
), counted as (${countHitsSql(8, { org: "$11" })}
), activated as (
  update identity set state = 'active', registered_at = $5
  where org_id = $1 and id = (select identity_id from consumed) and username_normalized = $10 and $7::boolean and state = 'pending'
  returning id
), logged as (
  -- The trail: the consumed code; a code that was not consumed (a wrong guess, or
  -- a consume another request made first), and its lock-out; a guess no live code
  -- took (not recorded without an organization: a flow id that named none).
  insert into event (org_id, type, purpose, identity_id, code_id, request_id, details, occurred_at)
  select $1, e.type, $4, e.identity_id, e.code_id, nullif($9::text, ''), e.details, $5
  from (
    select 'code.verified' as type, identity_id, $2::uuid as code_id, null::jsonb as details from consumed
    union all
    select 'code.failed', $3::uuid, $2::uuid, jsonb_build_object('reason', case when $6 = 'consume' then 'already_used' else 'wrong_code' end)
    where $2::uuid <> '${NO_CODE}'::uuid and not exists (select 1 from consumed)
    union all
    select 'code.locked', $3::uuid, $2::uuid, null from killed
    union all
    select 'code.failed', null, null, '{"reason":"no_attempt"}'::jsonb where $2::uuid = '${NO_CODE}'::uuid and $1 <> ''
  ) e
)
select i.org_id, i.id, i.username, i.created_at, i.phone_number,
  case when exists (select 1 from activated) then 'active' else i.state end as state,
  case when exists (select 1 from activated) then $5 else i.registered_at end as registered_at
from (select 1 from durability) as one
left join identity i on i.org_id = $1 and i.id = (select identity_id from consumed) and i.username_normalized = $10`;

export interface Settlement {
  /** The code the attempt was counted on, if any; else the organization and purpose of the request. */
  code: LiveCode | { orgId: string; purpose: Purpose };
  outcome: "consume" | "kill" | "none";
  now: Date;
  /** Make a pending identity active when its code is consumed (registration). */
  activate: boolean;
  /** Failure windows to count. */
  counted: readonly Window[];
  /**
   * The organization they are counted under: the request's, whose counters the
   * attempt's check read ("" for an administrator's code named by its flow id
   * alone, whose organization the request does not say).
   */
  countedOrgId: string;
  /** Recorded with the events the statement writes. */
  audit?: Audit;
}

/** Settles an attempt; answers the identity of a consumed code, undefined otherwise (or when another consumed it first). */
export async function settleAttempt(sql: Sql, s: Settlement, signal?: AbortSignal): Promise<Identity | undefined> {
  const code = "id" in s.code ? [s.code.orgId, s.code.id, s.code.identityId, s.code.purpose] : [s.code.orgId, NO_CODE, NO_CODE, s.code.purpose];
  const username = "id" in s.code ? s.code.usernameNormalized : "";
  const [row] = await sql.query(SETTLE_SQL, [...code, s.now, s.outcome, s.activate, windowsJson(s.counted), s.audit?.requestId ?? "", username, s.countedOrgId], signal);
  if (!row?.id) return undefined;
  return identityOfRow(row);
}

/** The live code `c` of the owner's purpose and binding, hashed over its owner (hash_input 2), that can still take an attempt. */
const OWNER_LIVE_CODE = `c.org_id = $1 and c.identity_id = (select id from owner) and c.purpose = $3 and c.binding = $6 and c.dead_at is null
    and c.hash_input = 2 and c.expires_at > $5 and c.attempts < c.max_attempts`;

/** Whether the guess (CTE `guess`, its hash under each key) is code `c`'s own. */
const GUESS_MATCHES = "exists (select 1 from guess g where g.key_id = c.key_id and g.hash = c.code_hash)";

// A verification by username, in one statement: the live code of the username,
// purpose and binding is found, its attempt counted and, when the guess's hash
// under the row's key ($9, one per key of $10, hex) is its own, consumed (activating a pending identity
// for registration), or killed on its last wrong attempt; the failure windows
// are counted; a live row hashed over its id (written before hash_input 2, see
// rules/codes/hash.ts) is only reported, for the two-statement path.
//
// Counts the attempt in the same update that compares, so that concurrent
// guesses can never exceed a code's attempts, and a concurrent consume that
// committed first is seen by the re-check of "dead_at is null": a code is
// consumed once. A client address over its limit of wrong codes gets no attempt
// at all (blocked_until says till when); a username over its limit only gets the
// first attempt of a fresh code. Both limits are read through their gates
// (GATE_OVER_SQL), which count the guess first and so decide concurrent guesses one
// after another. Only a consume waits for the disk: it is what a code's single
// use rests on; a failure's flush would tell a live code from none.
const VERIFY_SQL = `
with owner as (
  -- The whole row, answered from here when the code is consumed: joined again by
  -- id, the identity was read by a plan that, on statistics that had not seen the
  -- organization, scanned all of its identities (test/stale-statistics.test.ts).
  select org_id, id, username, created_at, phone_number, state, registered_at from identity
  where org_id = $1 and username_normalized = $2 and state = $4
), guess as (
  select k.key_id, decode(k.hash, 'hex') as hash from unnest($10::text[], $9::text[]) as k(key_id, hash)
), live as (
  -- The live code the guess is for, as this statement's snapshot has it, and whether the guess is its code.
  select c.id, ${GUESS_MATCHES} as matches
  from code c
  where ${OWNER_LIVE_CODE}
), by_row_id as (
  select exists (select 1 from code c where c.org_id = $1 and c.identity_id = (select id from owner) and c.purpose = $3 and c.binding = $6
                 and c.dead_at is null and c.hash_input = 1 and c.expires_at > $5) as live
), address_inc as (
  -- A guess that consumes nothing counts against the client address (one handed on
  -- to the two-statement path is counted there).
  select case when exists (select 1 from live where matches) or (select live from by_row_id) then 0 else 1 end as inc
), address_hits as (${countHitsSql(7, { when: "(select inc from address_inc) = 1" })}
), address_blocked as (${GATE_OVER_SQL("$7", "address_hits", "(select inc from address_inc)")}
), username_inc as (
  select case when exists (select 1 from live where not matches) then 1 else 0 end as inc
), username_hits as (${countHitsSql(8, { when: "(select inc from username_inc) = 1 and (select until from address_blocked) is null" })}
), username_over as (${GATE_OVER_SQL("$8", "username_hits", "(select inc from username_inc)")}
), attempted as (
  -- The guess is compared with the row being updated (after a re-check, the row as
  -- a concurrent send left it), never with an earlier version of it.
  update code c set
    attempts = c.attempts + 1,
    consumed_at = case when ${GUESS_MATCHES} then $5::timestamptz end,
    dead_at = case when ${GUESS_MATCHES} or c.attempts + 1 >= c.max_attempts then $5::timestamptz end
  where ${OWNER_LIVE_CODE}
    and ((select until from username_over) is null or c.attempts = 0)
    and (select until from address_blocked) is null
  returning c.id, c.identity_id, c.consumed_at is not null as consumed, c.dead_at is not null as dead
), consumed as (
  select identity_id from attempted where consumed
), activated as (
  update identity set state = 'active', registered_at = $5
  where org_id = $1 and id = (select identity_id from consumed) and username_normalized = $2 and $11::boolean and state = 'pending'
  returning id
), logged as (
  -- The trail: a consumed code, a wrong guess (and the lock-out it caused), or a
  -- guess no live code took. A blocked address's guess (only counted against the
  -- address) records nothing; neither does a guess handed on to the two-statement
  -- path (by_row_id), which records its own.
  insert into event (org_id, type, purpose, identity_id, code_id, request_id, details, occurred_at)
  select $1, e.type, $3, e.identity_id, e.code_id, nullif($12::text, ''), e.details, $5::timestamptz
  from (
    select case when a.consumed then 'code.verified' else 'code.failed' end as type, a.identity_id, a.id as code_id,
      case when a.consumed then null else '{"reason":"wrong_code"}'::jsonb end as details
    from attempted a
    union all
    select 'code.locked', a.identity_id, a.id, null from attempted a where a.dead and not a.consumed
    union all
    select 'code.failed', (select id from owner), null, '{"reason":"no_attempt"}'::jsonb
    where not exists (select 1 from attempted) and (select until from address_blocked) is null and not (select live from by_row_id)
  ) e
), durability as (
  select set_config('synchronous_commit', case when exists (select 1 from consumed) then 'on' else 'off' end, true)
)
select (select until from address_blocked) as blocked_until,
  (select live from by_row_id) as by_row_id,
  a.dead, a.consumed is not null as attempted,
  i.org_id, i.id, i.username, i.created_at, i.phone_number,
  case when exists (select 1 from activated) then 'active' else i.state end as state,
  case when exists (select 1 from activated) then $5 else i.registered_at end as registered_at
from (select 1 from durability) as one
left join attempted a on true
left join owner i on a.consumed`;

export interface OwnerVerification {
  orgId: string;
  usernameNormalized: string;
  purpose: Purpose;
  /** Only an identity in this state. */
  requiredState: IdentityState;
  /** The binding as stored ('' for none). */
  binding: string;
  /** The guess hashed under each key a row may name (rules/codes/hash.ts ownerCodeHashes). */
  guess: { keyIds: readonly string[]; hashes: readonly Buffer[] };
  now: Date;
  /** Make a pending identity active when its code is consumed (registration). */
  activate: boolean;
  /** Wrong codes per client address: over, no attempt at all; counted for every failure. */
  addressWindows: readonly Window[];
  /** Wrong codes per username: over, a code takes only its first attempt; counted when a live code took the guess. */
  usernameWindows: readonly Window[];
  /** Recorded with the event the statement writes. */
  audit?: Audit;
}

export type OwnerVerdict =
  /** The client address is over its limit: nothing was tried. */
  | { kind: "blocked"; until: Date }
  /** The code was consumed: its identity. */
  | { kind: "consumed"; identity: Identity }
  /** No live code took the guess, or a wrong one did (`killed` when that was its last attempt). */
  | { kind: "failed"; attempted: boolean; killed: boolean }
  /** The live code is hashed over its row id: to be verified in two statements (attemptCode, settleAttempt). */
  | { kind: "by-row-id" };

/** Verifies a guess for a username's live code in one statement (see VERIFY_SQL). */
export async function verifyByOwner(sql: Sql, v: OwnerVerification, signal?: AbortSignal): Promise<OwnerVerdict> {
  const [row] = await sql.query(
    VERIFY_SQL,
    [
      v.orgId,
      v.usernameNormalized,
      v.purpose,
      v.requiredState,
      v.now,
      v.binding,
      windowsJson(v.addressWindows),
      windowsJson(v.usernameWindows),
      v.guess.hashes.map((h) => h.toString("hex")),
      v.guess.keyIds,
      v.activate,
      v.audit?.requestId ?? "",
    ],
    signal,
  );
  if (row.blocked_until) return { kind: "blocked", until: new Date(row.blocked_until) };
  if (row.id) {
    return { kind: "consumed", identity: identityOfRow(row) };
  }
  if (!row.attempted && row.by_row_id) return { kind: "by-row-id" };
  return { kind: "failed", attempted: row.attempted === true, killed: row.dead === true };
}

/** Kills the live codes of an identity (of one purpose, or all), recording it; answers how many. */
export async function invalidateCodes(sql: Sql, orgId: string, identityId: string, purpose: Purpose | undefined, now: Date, audit: Audit = {}): Promise<number> {
  const [row] = await sql.query(
    `with killed as (
       update code set dead_at = $3 where org_id = $1 and identity_id = $2::uuid and dead_at is null and ($4 = '' or purpose = $4) returning id
     ), logged as (
       insert into event (org_id, type, purpose, identity_id, actor, request_id, details, occurred_at)
       select $1, 'codes.invalidated', nullif($4::text, ''), $2::uuid, nullif($5::text, ''), nullif($6::text, ''),
         jsonb_build_object('count', (select count(*) from killed)::text), $3
     )
     select (select count(*) from killed)::int as n`,
    [orgId, identityId, now, purpose ?? "", audit.actor ?? "", audit.requestId ?? ""],
  );
  return row.n;
}
