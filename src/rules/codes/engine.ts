// The rules for codes, done once for every flow: issuing (one live code per
// identity, purpose and binding, replaced atomically, with its mail queued in the
// same statement) and verifying (attempts counted atomically, consumed exactly once).
// The statements are in store/codes.ts.
//
// Codes and mails get time-ordered ids (UUIDv7, 74 random bits): a new row lands at the
// right edge of its primary key, which stays in memory and dirty, instead of on a random
// leaf of an index that grows with history.
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
// the same InvalidCode: the limit never tells that an account exists.
//
// Every public call runs the same statements, in number and text, whatever the
// state of the account: a send is one statement; a verification is an attempt
// and then one settling statement (consume, kill, or count only).
import { createHash, randomUUIDv7 } from "node:crypto";
import type { Config } from "../../config/config.ts";
import type { Secrets } from "../../config/secrets.ts";
import type { Clock } from "../../domain/clock.ts";
import { InvalidCode, RateLimited } from "../../domain/errors.ts";
import type { Audit } from "../../domain/events.ts";
import { normalizeUsername, type Identity, type IdentityState } from "../../domain/identity.ts";
import type { Org } from "../../domain/organization.ts";
import type { Channel } from "../../domain/outbox.ts";
import type { Purpose } from "../../domain/purpose.ts";
import { windows, type LimitedKey, type Window } from "../../domain/rate-limits.ts";
import { attemptCode, invalidateCodes, issueCode, settleAttempt, verifyByOwner, type SealedMail } from "../../store/codes.ts";
import type { Sql } from "../../store/sql.ts";
import { channelOf, mailChannelOf } from "../delivery/channels.ts";
import type { CodeEvents } from "../events.ts";
import { buildMessageText, type MailMessage } from "../mail/mime.ts";
import { encodeMail, encodeText } from "../mail/payload.ts";
import { seal } from "../mail/seal.ts";
import { currentTraceparent } from "../../lib/tracing.ts";
import type { AnswerTimes } from "../answer-times.ts";
import { builtinMailer, type MailContent, type MailKind, type Mailer } from "../mail/templates.ts";
import { ownerCodeHash, ownerCodeHashes, rowCodeHash, rowCodeMatches } from "./hash.ts";
import { effectivePolicy } from "./policy.ts";
import { randomString } from "./random.ts";

/**
 * Who a code is for: a username as typed (public calls), or an identity by id
 * (admin calls) with its username, over which the code is hashed.
 */
export type IssueTarget = { username: string } | { identityId: string; username: string };
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
  requiredState: IdentityState;
  /** The mail that carries the code; none for codes handed to an administrator. */
  mail?: MailKind;
  /** How the mail and the notice are written (the organization's templates, in the caller's locale, with a link if any); the built-in English ones when absent. */
  mailer?: Mailer;
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
  /** Who asked, for the event trail (written by the same statement). */
  audit?: Audit;
  /** The call's signal: once it aborts, no statement is started. */
  signal?: AbortSignal;
}

export interface IssuedCode {
  /** False when no identity matched, a limit was hit or no slot was free; no code was written. */
  written: boolean;
  /** Over a rate limit: how long until the send would be allowed; else 0. */
  retryAfterMs: number;
  /** The code's id: the flow id of an admin recovery link. */
  id: string;
  code: string;
  expiresAt: Date;
  /** The channels it queued messages on: in a caller's transaction, the caller calls mailCommitted with them once it committed. */
  queuedOn: Channel[];
}

export interface VerifyRequest {
  /** Required with a username target; a flow id names its organization itself. */
  org?: Org;
  purpose: Purpose;
  target: VerifyTarget;
  /** Only an identity in this state gets through. */
  requiredState: IdentityState;
  code: string;
  /** The binding the code was sent with, if it was. */
  binding?: string;
  /** Make a pending identity active when its code is consumed (registration). */
  activate?: boolean;
  /** Limits of wrong codes per username: counted against live codes only. */
  failureLimits?: LimitedKey[];
  /** Limits of wrong codes per client address: checked first, counted for every failure. */
  addressLimits?: LimitedKey[];
  /** Who asked, for the event trail (written by the settling statement). */
  audit?: Audit;
  /** The call's signal: once it aborts, no statement is started (a counted attempt is not followed by a consume). */
  signal?: AbortSignal;
}

export class CodeEngine {
  private readonly sql: Sql;
  private readonly config: Config;
  private readonly secrets: Secrets;
  private readonly clock: Clock;
  private readonly events: CodeEvents;
  private readonly onQueued: (channels: readonly Channel[]) => void;
  private readonly failureTimes: AnswerTimes;

  constructor(deps: {
    sql: Sql;
    config: Config;
    secrets: Secrets;
    clock: Clock;
    events: CodeEvents;
    onQueued: (channels: readonly Channel[]) => void;
    /** How long the wrong guesses that a live code took lasted: every failed guess by username answers no sooner than most of them. */
    failureTimes: AnswerTimes;
  }) {
    this.sql = deps.sql;
    this.config = deps.config;
    this.secrets = deps.secrets;
    this.clock = deps.clock;
    this.events = deps.events;
    this.onQueued = deps.onQueued;
    this.failureTimes = deps.failureTimes;
  }

  /**
   * Issues a new code for the target if it is an identity in the wanted state,
   * replacing its live code of the purpose and binding, and queues its mail in
   * the same statement. The work before the statement is the same whether or not
   * the identity exists, so the answer time does not tell. In a caller's
   * transaction (`tx`), the caller calls mailCommitted once it committed.
   */
  async issue(req: IssueRequest, tx?: Sql): Promise<IssuedCode> {
    const sql = tx ?? this.sql;
    const policy = effectivePolicy(this.config, req.org.settings, req.purpose);
    const lifespanMs = req.lifespanMs ?? policy.lifespanMs;
    const code = randomString(policy.alphabet, policy.length);
    const id = randomUUIDv7();
    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + lifespanMs);
    const key = this.secrets.codeKeys.current;
    const from = this.sender(req.org);
    const username = req.target.username.trim();
    const binding = req.adminIssued ? ADMIN : req.binding ? storedBinding(req.binding) : UNBOUND;
    // An administrator's code is verified by its flow id, before its owner is known: hashed over its id.
    const hash = req.adminIssued
      ? rowCodeHash(key.key, id, code)
      : ownerCodeHash(key.key, { orgId: req.org.id, usernameNormalized: normalizeUsername(username), purpose: req.purpose, binding }, code);
    const mailer = req.mailer ?? builtinMailer(req.org.name);
    // A purpose handed to the SMS channel gets the code as a short text too, sealed
    // for the same row: the statement queues it when the identity has a phone
    // number, else the mail (the work does not depend on the account).
    const mailChannel = mailChannelOf(req.org, req.purpose);
    const mailId = randomUUIDv7();
    const mail = req.mail
      ? {
          ...this.sealed(mailId, now, mailer.render(req.mail, { code, lifespanMs }), from, mailChannel, mailer.personal ? undefined : { code }),
          text: channelOf(req.org, req.purpose) === "sms" ? seal(this.secrets.mailKeys, mailId, encodeText(code)).sealed : undefined,
        }
      : undefined;
    // A notice is rendered and sealed for every call that may need it: the work does not depend on the account.
    // A notice shows no code and no link (templates may not name them): shared by every recipient.
    const notice = req.notice ? { ...this.sealed(randomUUIDv7(), now, mailer.render(req.notice.kind, {}), from, mailChannel, {}), when: req.notice.when } : undefined;
    const result = await issueCode(
      sql,
      {
        orgId: req.org.id,
        target: "identityId" in req.target ? { identityId: req.target.identityId, usernameNormalized: normalizeUsername(username) } : { usernameNormalized: normalizeUsername(username), username },
        requiredState: req.requiredState,
        id,
        purpose: req.purpose,
        hash,
        hashInput: req.adminIssued ? 1 : 2,
        keyId: key.id,
        now,
        expiresAt,
        maxAttempts: policy.maxAttempts,
        binding,
        slots: this.config.boundCodesPerIdentity,
        limits: windows(req.limits ?? [], now.getTime()),
        mail,
        notice,
        createPendingId: req.createPending ? randomUUIDv7() : undefined,
        mailKeyId: this.secrets.mailKeys.current.id,
        audit: req.audit,
      },
      req.signal,
    );
    if (result.issued) this.events.issued(req.purpose, mail !== undefined);
    if (result.takeBackError) this.events.takeBackFailed(result.takeBackError);
    // In a caller's transaction the mail is not committed yet: a courier told now could look before it is.
    if (result.queuedOn.length && !tx) this.onQueued(result.queuedOn);
    const retryAfterMs = result.retryAt ? Math.max(1, result.retryAt.getTime() - now.getTime()) : 0;
    return { written: result.issued, id, code, expiresAt, retryAfterMs, queuedOn: result.queuedOn };
  }

  /** The transaction in which `issue` queued messages on these channels committed: their claimants may look for them now. */
  mailCommitted(channels: readonly Channel[]): void {
    if (channels.length) this.onQueued(channels);
  }

  /**
   * Consumes the code if it is right, live and unexpired, and answers its
   * identity. Every other case, whatever the cause, is the one InvalidCode; a
   * client address over its limit of wrong codes is RateLimited.
   */
  async verify(req: VerifyRequest): Promise<Identity> {
    const now = this.clock.now();
    const target = req.target;
    if (!("flowId" in target) && !req.org) throw new InvalidCode();
    const addressWindows = windows(req.addressLimits ?? [], now.getTime());
    const usernameWindows = windows(req.failureLimits ?? [], now.getTime());
    if ("flowId" in target) return this.verifyInTwoStatements(req, now, addressWindows, usernameWindows);
    // Every verification by username is held; a failed one answers once its hold has passed (answer-times.ts).
    const hold = this.failureTimes.hold(req.purpose);
    try {
      const org = req.org!;
      const owner = { orgId: org.id, usernameNormalized: normalizeUsername(target.username), purpose: req.purpose, binding: req.binding ? storedBinding(req.binding) : UNBOUND };
      const verdict = await verifyByOwner(
        this.sql,
        {
          ...owner,
          requiredState: req.requiredState,
          guess: ownerCodeHashes(this.secrets.codeKeys, owner, req.code),
          now,
          activate: req.activate === true,
          addressWindows,
          usernameWindows,
          audit: req.audit,
        },
        req.signal,
      );
      switch (verdict.kind) {
        case "blocked":
          throw new RateLimited(Math.max(1, verdict.until.getTime() - now.getTime()));
        case "consumed":
          this.events.verified(req.purpose);
          return verdict.identity;
        case "failed":
          if (verdict.killed) this.events.locked(req.purpose);
          this.events.failed(req.purpose);
          // A guess that a live code took writes its attempt; one that none took does not, and answered sooner.
          if (verdict.attempted) hold.record();
          throw new InvalidCode();
        case "by-row-id":
          // A code written before codes were hashed over their owner: until such codes have expired.
          return await this.verifyInTwoStatements(req, now, addressWindows, usernameWindows);
      }
    } catch (err) {
      if (err instanceof InvalidCode) await hold.passed();
      throw err;
    } finally {
      hold.cancel();
    }
  }

  /**
   * The attempt, the comparison here, and the settling statement: for an
   * administrator's code (named by its flow id, hashed over its row id), and a
   * live code hashed over its row id by an earlier version.
   */
  private async verifyInTwoStatements(req: VerifyRequest, now: Date, addressWindows: Window[], usernameWindows: Window[]): Promise<Identity> {
    const target = req.target;
    const orgId = req.org?.id ?? "";
    // One transaction: the attempt's read of the limits locks their counters until the settlement has counted (store/codes.ts).
    const verdict = await this.sql.transaction(async (tx) => {
      const attempt = await attemptCode(
        tx,
        {
          orgId,
          purpose: req.purpose,
          requiredState: req.requiredState,
          target:
            "flowId" in target
              ? { flowId: target.flowId, usernameNormalized: normalizeUsername(target.username ?? "") }
              : { usernameNormalized: normalizeUsername(target.username), binding: req.binding ? storedBinding(req.binding) : UNBOUND },
          now,
          addressWindows,
          usernameWindows,
        },
        req.signal,
      );
      if (attempt.blockedUntil) return { blocked: true as const, until: attempt.blockedUntil };
      const live = attempt.code;
      let outcome: "consume" | "kill" | "fail" | "none" = "none";
      if (live) {
        const right = rowCodeMatches(this.secrets.codeKeys, live.keyId, live.id, req.code, live.hash);
        outcome = right ? "consume" : live.attempts >= live.maxAttempts ? "kill" : "fail";
      }
      // A wrong code counts against the client address always, against the username only when a live code took the guess.
      const counted = outcome === "consume" ? [] : outcome === "none" ? addressWindows : [...addressWindows, ...usernameWindows];
      const identity = await settleAttempt(
        tx,
        { code: live ?? { orgId, purpose: req.purpose }, outcome: outcome === "fail" ? "none" : outcome, now, activate: req.activate === true, counted, countedOrgId: orgId, audit: req.audit },
        req.signal,
      );
      return { blocked: false as const, outcome, identity };
    });
    if (verdict.blocked) throw new RateLimited(Math.max(1, verdict.until.getTime() - now.getTime()));
    if (verdict.outcome === "kill") this.events.locked(req.purpose);
    // Undefined also when another request consumed it first.
    if (verdict.outcome !== "consume" || !verdict.identity) {
      this.events.failed(req.purpose);
      throw new InvalidCode();
    }
    this.events.verified(req.purpose);
    return verdict.identity;
  }

  /** Kills the live codes of an identity (of one purpose, or all), recording it in the trail; answers how many. In a caller's transaction with `tx`. */
  invalidate(orgId: string, identityId: string, purpose: Purpose | undefined, audit?: Audit, tx?: Sql): Promise<number> {
    return invalidateCodes(tx ?? this.sql, orgId, identityId, purpose, this.clock.now(), audit);
  }

  /** The mail as its message (built now, once) sealed for the outbox; `shared`: see MailMessage. */
  private sealed(id: string, now: Date, content: MailContent, from: { name: string; address: string }, channel: Channel, shared: MailMessage["shared"]): SealedMail {
    const message = buildMessageText({ id, date: now, from, ...content, shared });
    return { id, subject: content.subject, body: seal(this.secrets.mailKeys, id, encodeMail({ from: from.address, message, trace: currentTraceparent() })).sealed, channel };
  }

  private sender(org: Org): { name: string; address: string } {
    return { name: org.settings.senderName || org.name, address: org.settings.senderAddress || this.config.mailFrom };
  }
}
