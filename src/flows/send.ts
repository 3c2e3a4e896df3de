import type { HandlerContext } from "@connectrpc/connect";
import { rateLimited } from "../abuse/rate-limiter.ts";
import type { IssueRequest, Issued } from "../codes/engine.ts";
import type { Purpose } from "../config/config.ts";
import type { MailKind } from "../courier/templates.ts";
import type { IdentityStateName } from "../storage/entities.ts";
import type { FlowDeps } from "./deps.ts";
import type { Org } from "./organizations.ts";

export interface PublicSend {
  orgId: string;
  tenantId: string;
  username: string;
  /** The application's flow binding ("" for none). */
  binding: string;
  purpose: Purpose;
  /** Only an identity in this state gets the code. */
  state: IdentityStateName;
  mail: MailKind;
  /** A notice for the username itself, decided inside the same statement (see IssueRequest). */
  notice?: (org: Org) => IssueRequest["notice"];
  /** Self-service sign-up: a pending identity is created for a new username. */
  createPending?: boolean;
}

/**
 * A public "send me a code" call: counts its rate limits and, within them,
 * issues and queues the code, in one statement whether or not the account
 * exists. Throws resource_exhausted over a limit; answers nothing else that
 * depends on the account.
 */
export async function publicSend(deps: FlowDeps, ctx: HandlerContext, send: PublicSend): Promise<{ org?: Org; sent?: Issued }> {
  const org = await deps.orgs.resolve(send.orgId, send.tenantId);
  const keys = deps.limits.sendKeys(org, send.purpose, send.username, ctx);
  if (!org) {
    await deps.limits.enforce(send.orgId || send.tenantId, keys);
    return {};
  }
  const sent = await deps.codes.issue({
    org,
    purpose: send.purpose,
    target: { username: send.username },
    state: send.state,
    mail: send.mail,
    limits: keys,
    binding: send.binding || undefined,
    notice: send.notice?.(org),
    createPending: send.createPending,
    signal: ctx.signal,
  });
  if (sent.retryAfterMs > 0) throw rateLimited(sent.retryAfterMs);
  return { org, sent };
}
