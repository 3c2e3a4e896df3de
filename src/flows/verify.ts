import type { HandlerContext } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Purpose } from "../config/config.ts";
import type { IdentityStateName } from "../storage/entities.ts";
import { invalidCode } from "../transport/errors.ts";
import { identityToProto, type IdentityRow } from "../transport/mapping.ts";
import type { FlowDeps } from "./deps.ts";

export interface CodeByUsername {
  orgId: string;
  tenantId: string;
  username: string;
  code: string;
  /** The binding the code was sent with ("" for none). */
  binding: string;
}

/** The answer of every successful verification: the identity and a proof token. */
export async function proofFor(deps: FlowDeps, identity: IdentityRow, purpose: Purpose) {
  const proof = await deps.tokens.issue(identity, purpose, deps.app.clock.now());
  return { identity: identityToProto(identity), token: proof.token, tokenExpiresAt: timestampFromDate(proof.expiresAt) };
}

/**
 * Verifies a code named by username and organization (and its binding), within
 * the limits of wrong codes, and answers with a proof token.
 */
export async function verifyByUsername(
  deps: FlowDeps,
  ctx: HandlerContext,
  req: CodeByUsername,
  purpose: Purpose,
  state: IdentityStateName,
  activate = false,
) {
  const org = await deps.orgs.resolve(req.orgId, req.tenantId);
  if (!org) throw invalidCode();
  const identity = await deps.codes.verify({
    org,
    purpose,
    target: { username: req.username },
    state,
    code: req.code,
    binding: req.binding || undefined,
    activate,
    failureLimits: deps.limits.verifyKeys(org, req.username),
    addressLimits: deps.limits.verifyAddressKeys(org, ctx),
    signal: ctx.signal,
  });
  return proofFor(deps, identity, purpose);
}
