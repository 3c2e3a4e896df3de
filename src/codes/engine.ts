// The rules for codes, done once for every flow: issuing (one live code per
// identity, purpose and binding, replaced atomically, with its mail queued in the
// same statement) and verifying (attempts counted atomically, consumed exactly once).
// Codes and mails get time-ordered ids (UUIDv7, 74 random bits): a new row lands at the
// right edge of its primary key, which stays in memory and dirty, instead of on a random
// leaf of an index that grows with history (a leaf read and dirtied per issuance, and
// a full-page image in the WAL for each first touch after a checkpoint).
//
// Bindings. An application may bind a code to its own flow (a binding value on
// send, required on verify): the code is then found only with that binding, so
// guesses without it never touch the code nor its attempts. Bound codes of one
// identity and purpose take one of `boundCodesPerIdentity` slots: a flow's new send
// replaces its own code, never another flow's, and a send finding no free slot
// issues nothing. An administrator's recovery code is bound to "admin": it is
// redeemed through its flow id only, and nothing public replaces it.
//
// Wrong guesses against live codes count per username (a guess with no live code
// to try costs the account nothing); past that limit a code takes only its first
// attempt, so an owner's fresh code still works. Blocked or wrong, the answer is
// the same invalid-code error: the limit never tells that an account exists.
//
// Every public call runs the same statements, in number and text, whatever the
// state of the account: a send is one statement; a verification is an attempt
// and then one settling statement (consume, fail, kill, or count only).
import { createHash, randomUUIDv7 } from "node:crypto";
import type { Clock } from "../clock.ts";
import type { Config, Purpose } from "../config/config.ts";
import type { Secrets } from "../config/secrets.ts";
import { renderMail, type MailKind } from "../courier/templates.ts";
import { seal } from "../courier/seal.ts";
import type { Org } from "../flows/organizations.ts";
import type { IdentityStateName } from "../storage/entities.ts";
import { bytes, isUniqueViolation, type Sql } from "../storage/sql.ts";
import { invalidCode } from "../transport/errors.ts";
import type { IdentityRow } from "../transport/mapping.ts";
import { countHitsSql, rateLimited, windows, windowsJson, type LimitedKey } from "../abuse/rate-limiter.ts";
import { codeHash, codeMatches } from "./hash.ts";
import { effectivePolicy } from "./policy.ts";
import { randomString } from "./random.ts";

export const normalizeUsername = (username: string) => username.trim().toLowerCase();

/** Who a code is for: a username as typed (public calls) or an identity id (admin calls). */
export type IssueTarget = { username: string } | { identityId: string };
/** A username as typed, or the flow id of an admin recovery link (with, optionally, the username it must belong to). */
export type VerifyTarget = { username: string } | { flowId: string; username?: string };

const UNBOUND = "";
const ADMIN = "admin";
/** How a binding value is kept: its SHA-256, never the value (it guards the owner's flow). */
const storedBinding = (value: string) => `b:${createHash("sha256").update(value).digest("base64url")}`;

export interface IssueRequest {
  org: Org;
  purpose: Purpose;
  target: IssueTarget;
  /** Only an identity in this state gets a code. */
  state: IdentityStateName;
  /** The mail that carries the code; none for codes handed to an administrator. */
  mail?: MailKind;
  lifespanMs?: number;
  /** Rate limits counted in the same statement; over any, nothing is issued. */
  limits?: LimitedKey[];
  /** The application's flow binding: verification must present it. */
  binding?: string;
  /** An administrator's recovery code: redeemed through its flow id only. */
  adminIssued?: boolean;
  /**
   * A notice to the username itself, queued in the same statement when the
   * username has no identity (`unknown`) or an active one (`active`).
   */
  notice?: { kind: MailKind; when: "unknown" | "active" };
  /** Creates a pending identity for the username when it has none (self-service sign-up). */
  createPending?: boolean;
  /** The call's signal: once it aborts, no statement is started. */
  signal?: AbortSignal;
}

export interface Issued {
  /** False when no identity matched, a limit was hit or no slot was free; no code was written. */
  issued: boolean;
  /** Over a rate limit: how long until the send would be allowed; else 0. */
  retryAfterMs: number;
  /** The code's id: the flow id of an admin recovery link. */
  id: string;
  code: string;
  expiresAt: Date;
}

export interface VerifyRequest {
  /** Required with a username target; a flow id names its organization itself. */
  org?: Org;
  purpose: Purpose;
  target: VerifyTarget;
  state: IdentityStateName;
  code: string;
  /** The binding the code was sent with, if it was. */
  binding?: string;
  /** Make a pending identity active when its code is consumed (registration). */
  activate?: boolean;
  /** Limits of wrong codes per username: counted against live codes only. */
  failureLimits?: LimitedKey[];
  /** Limits of wrong codes per client address: checked first, counted for every failure. */
  addressLimits?: LimitedKey[];
  /** The call's signal: once it aborts, no statement is started (a counted attempt is not followed by a consume). */
  signal?: AbortSignal;
}

export interface CodeEvents {
  issued(purpose: Purpose, mailed: boolean): void;
  verified(purpose: Purpose): void;
  failed(purpose: Purpose): void;
  locked(purpose: Purpose): void;
}

// The rate-limit counters are part of the statement, so that every send, for a
// known username or not, is one statement with one commit.
const ISSUE_SQL = (by: "username" | "id", bound: boolean) => `
with counted as (${countHitsSql(16)}
), verdict as (
  select coalesce(bool_and(c.hits <= w.max), true) as allowed,
    max(case when c.hits > w.max then w.end_at end) as retry_at
  from counted c join jsonb_to_recordset($16::jsonb) as w(key text, end_at timestamptz, max int) on w.key = c.key
), created as (
  insert into identity (org_id, id, username, username_normalized, state, created_at)
  select $1, $19::uuid, $20, $2, 'pending', $8
  where $21::boolean and (select allowed from verdict)
  on conflict (org_id, username_normalized) do nothing
  returning org_id, id, username, state
), found as (
  select org_id, id, username, state from identity
  where org_id = $1 and ${by === "username" ? "username_normalized = $2" : "id = $2::uuid"}
    and (select allowed from verdict)
  union all
  select org_id, id, username, state from created
), ident as (
  select org_id, id, username from found where state = $3
), ${bound ? BOUND_INSERT : UNBOUND_INSERT}, queued as (
  insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select ident.org_id, $11::uuid, $5, ident.username, $12, $13, $14, 'queued', 0, $8, $8, $8
  from ident join issued on issued.identity_id = ident.id
  where $15::boolean
  returning id
), noticed as (
  insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select $1, $22::uuid, $5, $23, $24, $25, $14, 'queued', 0, $8, $8, $8
  where (select allowed from verdict) and (
    ($26 = 'unknown' and not exists (select 1 from found)) or
    ($26 = 'active' and exists (select 1 from found where state = 'active')))
  returning id
)
select (select count(*) from issued)::int as issued,
  ((select count(*) from queued) + (select count(*) from noticed))::int as queued,
  (select retry_at from verdict) as retry_at`;

// One live code per identity, purpose and binding: a new one takes its place.
const UNBOUND_INSERT = `issued as (
  insert into code (org_id, id, identity_id, purpose, binding, code_hash, key_id, created_at, expires_at, attempts, max_attempts)
  select org_id, $4::uuid, id, $5, $17, $6, $7, $8, $9, 0, $10 from ident
  where $18::int > 0 -- (the slots of bound codes: always true, named so that every parameter has a type)
  on conflict (org_id, identity_id, purpose, binding) where dead_at is null do update set
    id = excluded.id, code_hash = excluded.code_hash, key_id = excluded.key_id, created_at = excluded.created_at,
    expires_at = excluded.expires_at, attempts = 0, max_attempts = excluded.max_attempts
  returning identity_id
)`;

// A flow's new send replaces its own code; another flow's code takes a free
// slot, or the slot of an expired code; with none free nothing is issued.
const BOUND_INSERT = `same as (
  update code c set id = $4::uuid, code_hash = $6, key_id = $7, created_at = $8, expires_at = $9, attempts = 0, max_attempts = $10
  from ident i
  where c.org_id = i.org_id and c.identity_id = i.id and c.purpose = $5 and c.binding = $17 and c.dead_at is null
  returning c.identity_id
), free as (
  select s.slot from ident i, generate_series(0, $18::int - 1) as s(slot)
  where not exists (select 1 from same)
    and not exists (select 1 from code c where c.org_id = i.org_id and c.identity_id = i.id and c.purpose = $5
                    and c.slot = s.slot and c.dead_at is null and c.expires_at > $8)
  order by s.slot limit 1
), inserted as (
  insert into code (org_id, id, identity_id, purpose, binding, slot, code_hash, key_id, created_at, expires_at, attempts, max_attempts)
  select i.org_id, $4::uuid, i.id, $5, $17, f.slot, $6, $7, $8, $9, 0, $10 from ident i, free f
  on conflict (org_id, identity_id, purpose, slot) where dead_at is null and slot is not null do update set
    id = excluded.id, binding = excluded.binding, code_hash = excluded.code_hash, key_id = excluded.key_id,
    created_at = excluded.created_at, expires_at = excluded.expires_at, attempts = 0, max_attempts = excluded.max_attempts
    where code.expires_at <= $8
  returning identity_id
), issued as (
  select identity_id from same union all select identity_id from inserted
)`;

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
const ATTEMPT_SQL = (by: "username" | "flow") => {
  const target =
    by === "username"
      ? `c.org_id = $1 and c.purpose = $3 and c.binding = $6 and c.dead_at is null and c.identity_id = (
           select id from identity where org_id = $1 and username_normalized = $2 and state = $4)`
      : // A flow id names an admin-issued recovery code (its index holds live recovery codes only).
        `c.id = $2::uuid and c.purpose = 'recovery' and c.binding = 'admin' and c.dead_at is null and ($1 = '' or c.org_id = $1) and $3 = 'recovery'
         and exists (select 1 from identity i where i.org_id = c.org_id and i.id = c.identity_id and i.state = $4
                     and ($6 = '' or i.username_normalized = $6))`;
  // One primary-key probe per window: a join would let a generic plan scan the
  // organization's counters, as it did on stale statistics.
  const over = (param: string) => `
  select max(w.end_at) as until
  from jsonb_to_recordset(${param}::jsonb) as w(key text, start timestamptz, end_at timestamptz, max int)
  where (select l.hits from rate_limit l where l.org_id = $1 and l.key = w.key and l.window_start = w.start) >= w.max`;
  return `
with address_blocked as (${over("$7")}
), username_over as (${over("$8")}
), attempted as (
  update code c set attempts = c.attempts + 1
  where ${target}
    and c.expires_at > $5 and c.attempts < c.max_attempts
    and ((select until from username_over) is null or c.attempts = 0)
    and (select until from address_blocked) is null
  returning c.org_id, c.id, c.identity_id, c.purpose, c.code_hash, c.key_id, c.attempts, c.max_attempts
)
select (select until from address_blocked) as blocked_until, a.*
from (select set_config('synchronous_commit', 'off', true)) as async_commit, (select 1) as one left join attempted a on true`;
};

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
), counted as (${countHitsSql(8)}
), activated as (
  update identity set state = 'active', registered_at = $5
  where org_id = $1 and id = (select identity_id from consumed) and $7::boolean and state = 'pending'
  returning id
)
select i.org_id, i.id, i.username, i.created_at,
  case when exists (select 1 from activated) then 'active' else i.state end as state,
  case when exists (select 1 from activated) then $5 else i.registered_at end as registered_at
from (select 1 from durability) as one left join identity i on i.org_id = $1 and i.id = (select identity_id from consumed)`;

/** Placeholders of SETTLE_SQL when there was no code to settle. */
const NO_CODE = "00000000-0000-0000-0000-000000000000";

export class CodeEngine {
  private readonly sql: Sql;
  private readonly config: Config;
  private readonly secrets: Secrets;
  private readonly clock: Clock;
  private readonly events: CodeEvents;
  private readonly onQueued: () => void;

  constructor(deps: { sql: Sql; config: Config; secrets: Secrets; clock: Clock; events: CodeEvents; onQueued: () => void }) {
    this.sql = deps.sql;
    this.config = deps.config;
    this.secrets = deps.secrets;
    this.clock = deps.clock;
    this.events = deps.events;
    this.onQueued = deps.onQueued;
  }

  /**
   * Issues a new code for the target if it is an identity in the wanted state,
   * replacing its live code of the purpose and binding, and queues its mail in
   * the same statement. The work before the statement is the same whether or not
   * the identity exists, so the answer time does not tell.
   */
  async issue(req: IssueRequest, sql: Sql = this.sql): Promise<Issued> {
    const policy = effectivePolicy(this.config, req.org.settings, req.purpose);
    const lifespanMs = req.lifespanMs ?? policy.lifespanMs;
    const code = randomString(policy.alphabet, policy.length);
    const id = randomUUIDv7();
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + lifespanMs);
    const key = this.secrets.codeKeys.current;
    const messageId = randomUUIDv7();
    const from = this.sender(req.org);
    const username = "username" in req.target ? req.target.username.trim() : "";
    let subject = "";
    let sealed: { keyId: string; sealed: Buffer } | undefined;
    if (req.mail) {
      const content = renderMail(req.mail, { orgName: req.org.name, code, lifespanMs });
      subject = content.subject;
      sealed = seal(this.secrets.mailKeys, messageId, JSON.stringify({ ...content, from }));
    }
    // A notice is rendered and sealed for every call that may need it: the work does not depend on the account.
    const noticeId = randomUUIDv7();
    let notice: { subject: string; sealed: Buffer } | undefined;
    if (req.notice) {
      const content = renderMail(req.notice.kind, { orgName: req.org.name });
      notice = { subject: content.subject, sealed: seal(this.secrets.mailKeys, noticeId, JSON.stringify({ ...content, from })).sealed };
    }
    const binding = req.adminIssued ? ADMIN : req.binding ? storedBinding(req.binding) : UNBOUND;
    const byUsername = "username" in req.target;
    let row: { issued: number; queued: number; retry_at: string | Date | null } | undefined;
    try {
      [row] = await sql.query<{ issued: number; queued: number; retry_at: string | Date | null }>(
        ISSUE_SQL(byUsername ? "username" : "id", binding.startsWith("b:")),
        [
          req.org.id,
          byUsername ? normalizeUsername(username) : (req.target as { identityId: string }).identityId,
          req.state,
          id,
          req.purpose,
          codeHash(key.key, id, code),
          key.id,
          now,
          expiresAt,
          policy.maxAttempts,
          messageId,
          subject,
          sealed?.sealed ?? null,
          sealed?.keyId ?? this.secrets.mailKeys.current.id,
          sealed !== undefined,
          windowsJson(windows(req.limits ?? [], now.getTime())),
          binding,
          this.config.boundCodesPerIdentity,
          randomUUIDv7(),
          username,
          req.createPending === true,
          noticeId,
          username,
          notice?.subject ?? "",
          notice?.sealed ?? null,
          req.notice?.when ?? "",
        ],
        req.signal,
      );
    } catch (err) {
      // A concurrent send of the same flow took its place first: that one is the flow's code.
      if (!isUniqueViolation(err)) throw err;
    }
    const issued = (row?.issued ?? 0) > 0;
    if (issued) this.events.issued(req.purpose, sealed !== undefined);
    if ((row?.queued ?? 0) > 0) this.onQueued();
    const retryAfterMs = row?.retry_at ? Math.max(1, new Date(row.retry_at).getTime() - now.getTime()) : 0;
    return { issued, id, code, expiresAt, retryAfterMs };
  }

  /**
   * Consumes the code if it is right, live and unexpired, and answers its
   * identity. Every other case, whatever the cause, is the one invalidCode error;
   * a client address over its limit of wrong codes is resource_exhausted.
   */
  async verify(req: VerifyRequest): Promise<IdentityRow> {
    const now = this.clock.now();
    const target = req.target;
    const byFlow = "flowId" in target;
    if (!byFlow && !req.org) throw invalidCode();
    const orgId = req.org?.id ?? "";
    const addressWindows = windows(req.addressLimits ?? [], now.getTime());
    const usernameWindows = windows(req.failureLimits ?? [], now.getTime());
    const [row] = await this.sql.query(
      ATTEMPT_SQL(byFlow ? "flow" : "username"),
      byFlow
        ? [orgId, target.flowId, req.purpose, req.state, now, normalizeUsername(target.username ?? ""), windowsJson(addressWindows), "[]"]
        : [orgId, normalizeUsername(target.username), req.purpose, req.state, now, req.binding ? storedBinding(req.binding) : UNBOUND, windowsJson(addressWindows), windowsJson(usernameWindows)],
      req.signal,
    );
    if (row.blocked_until) throw rateLimited(Math.max(1, new Date(row.blocked_until).getTime() - now.getTime()));

    let outcome: "consume" | "kill" | "fail" | "none" = "none";
    if (row.id) {
      const right = codeMatches(this.secrets.codeKeys, row.key_id, row.id, req.code, bytes(row.code_hash));
      outcome = right ? "consume" : row.attempts >= row.max_attempts ? "kill" : "fail";
    }
    // A wrong code counts against the client address always, against the username only when a live code took the guess.
    const counted = outcome === "consume" ? [] : outcome === "none" ? addressWindows : [...addressWindows, ...usernameWindows];
    const code = row.id ? [row.org_id, row.id, row.identity_id, row.purpose] : [orgId, NO_CODE, NO_CODE, req.purpose];
    const [identity] = await this.sql.query(
      SETTLE_SQL,
      [...code, now, outcome === "fail" ? "none" : outcome, req.activate === true, windowsJson(counted)],
      req.signal,
    );
    if (outcome === "kill") this.events.locked(req.purpose);
    // Empty when another request consumed it first.
    if (outcome !== "consume" || !identity?.id) {
      this.events.failed(req.purpose);
      throw invalidCode();
    }
    this.events.verified(req.purpose);
    return {
      id: identity.id,
      orgId: identity.org_id,
      username: identity.username,
      state: identity.state,
      createdAt: new Date(identity.created_at),
      registeredAt: identity.registered_at ? new Date(identity.registered_at) : null,
    };
  }

  /** Kills the live codes of an identity (of one purpose, or all); answers how many. */
  async invalidate(orgId: string, identityId: string, purpose: Purpose | undefined, sql: Sql = this.sql): Promise<number> {
    const rows = await sql.query(
      `update code set dead_at = $3 where org_id = $1 and identity_id = $2::uuid and dead_at is null and ($4 = '' or purpose = $4) returning id`,
      [orgId, identityId, this.clock.now(), purpose ?? ""],
    );
    return rows.length;
  }

  private sender(org: Org): string {
    const name = (org.settings.senderName || org.name).replace(/["\\\r\n]/g, "");
    return `"${name}" <${org.settings.senderAddress || this.config.mailFrom}>`;
  }
}
