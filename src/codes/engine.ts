// The rules for codes, done once for every flow: issuing (one live code per
// identity and purpose, replaced atomically, with its mail queued in the same
// statement) and verifying (attempts counted atomically, consumed exactly once).
// Codes and mails get time-ordered ids (UUIDv7, 74 random bits): a new row lands at the
// right edge of its primary key, which stays in memory and dirty, instead of on a random
// leaf of an index that grows with history (a leaf read and dirtied per issuance, and
// a full-page image in the WAL for each first touch after a checkpoint).
import { randomUUIDv7 } from "node:crypto";
import type { Clock } from "../clock.ts";
import type { Config, Purpose } from "../config/config.ts";
import type { Secrets } from "../config/secrets.ts";
import { renderMail, type MailKind } from "../courier/templates.ts";
import { seal } from "../courier/seal.ts";
import type { Org } from "../flows/organizations.ts";
import type { IdentityStateName } from "../storage/entities.ts";
import { bytes, type Sql } from "../storage/sql.ts";
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
  /** The call's signal: once it aborts, no statement is started. */
  signal?: AbortSignal;
}

export interface Issued {
  /** False when no identity matched or a limit was hit; no code was written. */
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
  /** Make a pending identity active when its code is consumed (registration). */
  activate?: boolean;
  /** Limits of wrong codes: checked in the attempt's statement, counted on failure. */
  failureLimits?: LimitedKey[];
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
const ISSUE_SQL = (by: "username" | "id") => `
with counted as (${countHitsSql(16)}
), verdict as (
  select coalesce(bool_and(c.hits <= w.max), true) as allowed,
    max(case when c.hits > w.max then w.end_at end) as retry_at
  from counted c join jsonb_to_recordset($16::jsonb) as w(key text, end_at timestamptz, max int) on w.key = c.key
), ident as (
  select org_id, id, username from identity
  where org_id = $1 and ${by === "username" ? "username_normalized = $2" : "id = $2::uuid"} and state = $3
    and (select allowed from verdict)
), issued as (
  insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, attempts, max_attempts)
  select org_id, $4::uuid, id, $5, $6, $7, $8, $9, 0, $10 from ident
  on conflict (org_id, identity_id, purpose) where dead_at is null do update set
    id = excluded.id, code_hash = excluded.code_hash, key_id = excluded.key_id, created_at = excluded.created_at,
    expires_at = excluded.expires_at, attempts = 0, max_attempts = excluded.max_attempts
  returning identity_id
), queued as (
  insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
  select ident.org_id, $11::uuid, $5, ident.username, $12, $13, $14, 'queued', 0, $8, $8, $8
  from ident join issued on issued.identity_id = ident.id
  where $15::boolean
  returning id
)
select (select count(*) from issued)::int as issued, (select count(*) from queued)::int as queued,
  (select retry_at from verdict) as retry_at`;

// Counts the attempt before comparing, so that concurrent guesses can never
// exceed the limit; the right code also counts as an attempt. A username over
// its limit of wrong codes gets no attempt at all (blocked_until says till when).
// Each statement finds its rows by key (the identity by username, then its live
// code through the partial index), so that a generic prepared plan cannot fall
// back to scanning the organization's codes.
const ATTEMPT_SQL = (by: "username" | "flow") => {
  const windowsParam = by === "username" ? "$6" : "$7";
  const target =
    by === "username"
      ? `c.org_id = $1 and c.purpose = $3 and c.dead_at is null and c.identity_id = (
           select id from identity where org_id = $1 and username_normalized = $2 and state = $4)`
      : // A flow id names an admin-issued recovery code (its index holds live recovery codes only).
        `c.id = $2::uuid and c.purpose = 'recovery' and c.dead_at is null and ($1 = '' or c.org_id = $1) and $3 = 'recovery'
         and exists (select 1 from identity i where i.org_id = c.org_id and i.id = c.identity_id and i.state = $4
                     and ($6 = '' or i.username_normalized = $6))`;
  return `
with blocked as (
  -- One primary-key probe per window: a join would let a generic plan scan the
  -- organization's counters, as it did on stale statistics.
  select max(w.end_at) as until
  from jsonb_to_recordset(${windowsParam}::jsonb) as w(key text, start timestamptz, end_at timestamptz, max int)
  where (select l.hits from rate_limit l where l.org_id = $1 and l.key = w.key and l.window_start = w.start) >= w.max
), attempted as (
  update code c set attempts = c.attempts + 1
  where ${target}
    and c.expires_at > $5 and c.attempts < c.max_attempts
    and (select until from blocked) is null
  returning c.org_id, c.id, c.identity_id, c.purpose, c.code_hash, c.key_id, c.attempts, c.max_attempts
)
select (select until from blocked) as blocked_until, a.* from (select 1) as one left join attempted a on true`;
};

// The code found by the attempt ($1 organization, $2 id), named also by the whole
// key of the live-code index ($3 identity, $4 purpose): with the id alone, a generic
// plan made on stale statistics took that partial index by organization and
// filtered every live code of it.
const LIVE_CODE = `org_id = $1 and id = $2::uuid and identity_id = $3::uuid and purpose = $4 and dead_at is null`;

const KILL_SQL = `update code set dead_at = $5 where ${LIVE_CODE}`;

const CONSUME_SQL = `
with consumed as (
  update code set consumed_at = $5, dead_at = $5
  where ${LIVE_CODE}
  returning identity_id
), activated as (
  update identity set state = 'active', registered_at = $5
  where org_id = $1 and id = (select identity_id from consumed) and $6::boolean and state = 'pending'
  returning id
)
select i.org_id, i.id, i.username, i.created_at,
  case when exists (select 1 from activated) then 'active' else i.state end as state,
  case when exists (select 1 from activated) then $5 else i.registered_at end as registered_at
from identity i where i.org_id = $1 and i.id = (select identity_id from consumed)`;

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
   * replacing its live code of the purpose, and queues its mail in the same
   * statement. The work before the statement is the same whether or not the
   * identity exists, so the answer time does not tell.
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
    let subject = "";
    let sealed: { keyId: string; sealed: Buffer } | undefined;
    if (req.mail) {
      const content = renderMail(req.mail, { orgName: req.org.name, code, lifespanMs });
      subject = content.subject;
      sealed = seal(this.secrets.mailKeys, messageId, JSON.stringify({ ...content, from: this.sender(req.org) }));
    }
    const byUsername = "username" in req.target;
    const [row] = await sql.query<{ issued: number; queued: number; retry_at: string | Date | null }>(ISSUE_SQL(byUsername ? "username" : "id"), [
      req.org.id,
      "username" in req.target ? normalizeUsername(req.target.username) : req.target.identityId,
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
      sealed?.keyId ?? "",
      sealed !== undefined,
      windowsJson(windows(req.limits ?? [], now.getTime())),
    ], req.signal);
    const issued = row.issued > 0;
    if (issued) this.events.issued(req.purpose, row.queued > 0);
    if (row.queued > 0) this.onQueued();
    const retryAfterMs = row.retry_at ? Math.max(1, new Date(row.retry_at).getTime() - now.getTime()) : 0;
    return { issued, id, code, expiresAt, retryAfterMs };
  }

  /** Queues a mail that carries no code (notices), for an address that may have no account. */
  async queueNotice(org: Org, kind: MailKind, recipient: string, purpose: Purpose, sql: Sql = this.sql): Promise<void> {
    const id = randomUUIDv7();
    const now = this.clock.now();
    const content = renderMail(kind, { orgName: org.name });
    const sealed = seal(this.secrets.mailKeys, id, JSON.stringify({ ...content, from: this.sender(org) }));
    await sql.query(
      `insert into courier_message (org_id, id, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
       values ($1, $2, $3, $4, $5, $6, $7, 'queued', 0, $8, $8, $8)`,
      [org.id, id, purpose, recipient, content.subject, sealed.sealed, sealed.keyId, now],
    );
    this.onQueued();
  }

  /**
   * Consumes the code if it is right, live and unexpired, and answers its
   * identity. Every other case, whatever the cause, is the one invalidCode error.
   */
  async verify(req: VerifyRequest): Promise<IdentityRow> {
    const now = this.clock.now();
    const target = req.target;
    const byFlow = "flowId" in target;
    if (!byFlow && !req.org) throw invalidCode();
    const failureWindows = windowsJson(windows(req.failureLimits ?? [], now.getTime()));
    const [row] = await this.sql.query(
      ATTEMPT_SQL(byFlow ? "flow" : "username"),
      byFlow
        ? [req.org?.id ?? "", target.flowId, req.purpose, req.state, now, normalizeUsername(target.username ?? ""), failureWindows]
        : [req.org!.id, normalizeUsername(target.username), req.purpose, req.state, now, failureWindows],
      req.signal,
    );
    if (row.blocked_until) throw rateLimited(Math.max(1, new Date(row.blocked_until).getTime() - now.getTime()));
    const failed = async (): Promise<never> => {
      this.events.failed(req.purpose);
      if (req.org && req.failureLimits?.length) await this.sql.query(countHitsSql(2), [req.org.id, failureWindows], req.signal);
      throw invalidCode();
    };
    if (!row.id) return failed();
    const live = [row.org_id, row.id, row.identity_id, row.purpose];
    if (!codeMatches(this.secrets.codeKeys, row.key_id, row.id, req.code, bytes(row.code_hash))) {
      if (row.attempts >= row.max_attempts) {
        await this.sql.query(KILL_SQL, [...live, now], req.signal);
        this.events.locked(req.purpose);
      }
      return failed();
    }
    const [identity] = await this.sql.query(CONSUME_SQL, [...live, now, req.activate === true], req.signal);
    // Empty when another request consumed it first.
    if (!identity) return failed();
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
