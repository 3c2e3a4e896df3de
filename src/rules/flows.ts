// The public flows, in the domain's terms: send a code (login, registration,
// recovery, self-service sign-up) and verify one, with the limits of each; and
// the identities an administrator creates. The services (services/) map the
// protobuf requests onto these and the answers back.
import { randomUUID } from "node:crypto";
import type { Clock } from "../domain/clock.ts";
import { AlreadyExists, InvalidCode, RateLimited } from "../domain/errors.ts";
import type { Audit } from "../domain/events.ts";
import type { Identity, IdentityState } from "../domain/identity.ts";
import type { Org } from "../domain/organization.ts";
import type { Channel } from "../domain/outbox.ts";
import type { Purpose } from "../domain/purpose.ts";
import { recordEvent } from "../store/events.ts";
import { insertPendingIdentity } from "../store/identities.ts";
import type { Sql } from "../store/sql.ts";
import type { AnswerTimes } from "./answer-times.ts";
import type { CodeEngine, IssueRequest, IssuedCode } from "./codes/engine.ts";
import type { FlowLimits } from "./limits/limits.ts";
import { linkTarget } from "./mail/links.ts";
import type { MailTemplates } from "./mail/org-templates.ts";
import type { MailKind } from "./mail/templates.ts";
import type { OrgDirectory } from "./organizations.ts";
import type { ProofTokens } from "./tokens.ts";

/** What the flows work with. */
export interface FlowDeps {
  sql: Sql;
  clock: Clock;
  orgs: OrgDirectory;
  codes: CodeEngine;
  limits: FlowLimits;
  tokens: ProofTokens;
  /** The organizations' mail templates (cached). */
  mail: MailTemplates;
  /** How long the sends that queued mail took: every send answers no sooner than most of them. */
  sendTimes: AnswerTimes;
}

/** The organization a public request names: org_id, else tenant_id. */
export interface OrgRef {
  orgId: string;
  tenantId: string;
}

export interface SendRequest extends OrgRef {
  username: string;
  /** The application's flow binding ("" for none). */
  binding: string;
  /** The caller's client address, for the per-address limits. */
  address: string;
  purpose: Purpose;
  /** Only an identity in this state gets the code. */
  requiredState: IdentityState;
  mail: MailKind;
  /** The caller's locales, most preferred first (the request's `locale`, else its Accept-Language); may be empty. */
  locales: readonly string[];
  /** The application's value handed back beside the proof token by the mailed link's page ("" for none). */
  state?: string;
  /** A notice for the username itself, decided inside the same statement (see IssueRequest). */
  notice?: (org: Org) => IssueRequest["notice"];
  /** Self-service sign-up: a pending identity is created for a new username. */
  createPending?: boolean;
  /** The call's request id, for the event trail. */
  requestId?: string;
  signal?: AbortSignal;
}

/**
 * A public "send me a code" call: counts its rate limits and, within them,
 * issues and queues the code, in one statement whether or not the account
 * exists, and answers no sooner than most sends that queued mail (answer-times.ts).
 * Throws RateLimited over a limit; answers nothing that depends on the account.
 */
export async function sendCode(deps: FlowDeps, send: SendRequest): Promise<{ org?: Org; sent?: IssuedCode }> {
  // Sign-up creates an identity as it sends: it is timed apart from the other sends of its mail.
  const hold = deps.sendTimes.hold(send.createPending ? `${send.mail}+signup` : send.mail);
  try {
    const org = await deps.orgs.resolve(send.orgId, send.tenantId);
    const keys = deps.limits.sendKeys(org, send.purpose, send.username, send.address);
    if (!org) {
      await deps.limits.enforce(send.orgId || send.tenantId, keys);
      await hold.passed();
      return {};
    }
    // From memory once cached; chosen by organization, locale and request alone, never by the account.
    const mailer = await deps.mail.mailer(org, { locales: send.locales, link: linkTarget(org, send.purpose, send) });
    const sent = await deps.codes.issue({
      org,
      purpose: send.purpose,
      target: { username: send.username },
      requiredState: send.requiredState,
      mail: send.mail,
      mailer,
      limits: keys,
      binding: send.binding || undefined,
      notice: send.notice?.(org),
      createPending: send.createPending,
      audit: { requestId: send.requestId },
      signal: send.signal,
    });
    if (sent.retryAfterMs > 0) throw new RateLimited(sent.retryAfterMs);
    // Timed by what it wrote: a code or only a notice, bound to a flow or not.
    if (sent.queuedOn.length > 0) hold.record(`${sent.written ? "code" : "notice"}${send.binding ? "+bound" : ""}`);
    await hold.passed();
    return { org, sent };
  } finally {
    hold.cancel();
  }
}

/** The answer of every successful verification: the identity and a proof token. */
export interface Proof {
  identity: Identity;
  token: string;
  expiresAt: Date;
  /** The organization's return URL, where this service's pages hand the token ("" for none). */
  returnUrl: string;
}

async function proofFor(deps: FlowDeps, identity: Identity, purpose: Purpose, org: Org | undefined): Promise<Proof> {
  const proof = await deps.tokens.issue(identity, purpose, deps.clock.now());
  // A flow id names no organization in the request: the identity's (cached), read after the code was consumed.
  const returnUrl = (org ?? (await deps.orgs.resolve(identity.orgId, "")))?.settings.returnUrl ?? "";
  return { identity, token: proof.token, expiresAt: proof.expiresAt, returnUrl };
}

export interface VerifyRequest extends OrgRef {
  username: string;
  code: string;
  /** The binding the code was sent with ("" for none). */
  binding: string;
  address: string;
  purpose: Purpose;
  requiredState: IdentityState;
  /** Make a pending identity active (registration). */
  activate?: boolean;
  /** The call's request id, for the event trail. */
  requestId?: string;
  signal?: AbortSignal;
}

/** Verifies a code named by username and organization (and its binding), within the limits of wrong codes. */
export async function verifyCode(deps: FlowDeps, req: VerifyRequest): Promise<Proof> {
  const org = await deps.orgs.resolve(req.orgId, req.tenantId);
  if (!org) throw new InvalidCode();
  const identity = await deps.codes.verify({
    org,
    purpose: req.purpose,
    target: { username: req.username },
    requiredState: req.requiredState,
    code: req.code,
    binding: req.binding || undefined,
    activate: req.activate,
    failureLimits: deps.limits.verifyKeys(org, req.username),
    addressLimits: deps.limits.verifyAddressKeys(org, req.address),
    audit: { requestId: req.requestId },
    signal: req.signal,
  });
  return proofFor(deps, identity, req.purpose, org);
}

export interface AdminRecoveryRequest extends OrgRef {
  /** The flow id of the administrator's link. */
  flowId: string;
  /** When given, the code must belong to this username. */
  username: string;
  code: string;
  address: string;
  /** The call's request id, for the event trail. */
  requestId?: string;
  signal?: AbortSignal;
}

/** Redeems an administrator's recovery code through its link's flow id; an organization or username given beside it must agree. */
export async function verifyAdminRecovery(deps: FlowDeps, req: AdminRecoveryRequest): Promise<Proof> {
  const named = req.orgId !== "" || req.tenantId !== "";
  const org = named ? await deps.orgs.resolve(req.orgId, req.tenantId) : undefined;
  if (named && !org) throw new InvalidCode();
  const identity = await deps.codes.verify({
    org,
    purpose: "recovery",
    target: { flowId: req.flowId, username: req.username },
    requiredState: "active",
    code: req.code,
    addressLimits: deps.limits.verifyAddressKeys(org, req.address),
    audit: { requestId: req.requestId },
    signal: req.signal,
  });
  return proofFor(deps, identity, "recovery", org);
}

/**
 * An administrator's new identity: pending, with its registration code mailed
 * unless skipped, and both recorded in the event trail, in one transaction.
 * Throws AlreadyExists for a taken username.
 */
export async function createPendingIdentity(
  deps: FlowDeps,
  org: Org,
  username: string,
  sendCode: boolean,
  locales: readonly string[] = [],
  phoneNumber: string | null = null,
  audit: Audit = {},
): Promise<Identity> {
  const identity: Identity = { id: randomUUID(), orgId: org.id, username: username.trim(), state: "pending", createdAt: deps.clock.now(), registeredAt: null, phoneNumber };
  const mailer = sendCode ? await deps.mail.mailer(org, { locales, link: linkTarget(org, "registration", { username: identity.username }) }) : undefined;
  let queuedOn: Channel[] = [];
  const created = await deps.sql.transaction(async (tx) => {
    if (!(await insertPendingIdentity(tx, identity))) return false;
    await recordEvent(tx, { orgId: org.id, type: "identity.created", identityId: identity.id, occurredAt: identity.createdAt }, audit);
    if (sendCode) {
      const target = { identityId: identity.id, username: identity.username };
      ({ queuedOn } = await deps.codes.issue({ org, purpose: "registration", target, requiredState: "pending", mail: "registration", mailer, audit }, tx));
    }
    return true;
  });
  deps.codes.mailCommitted(queuedOn);
  if (!created) throw new AlreadyExists("username", `username: ${username} already exists in organization ${org.id}`);
  return identity;
}
