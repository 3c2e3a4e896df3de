// What the public services share: the caller as the rules need it, and the
// answer of a successful verification.
import type { HandlerContext } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Proof } from "../rules/flows.ts";
import { canonicalLocale, parseAcceptLanguage } from "../rules/mail/locales.ts";
import { adminTokenIdKey, clientAddressKey, requestIdKey } from "./context-keys.ts";
import { invalidArgument } from "./errors.ts";
import { identityToProto } from "./mapping.ts";

/**
 * The caller's locales, most preferred first: the request's `locale`, else the
 * tags of its Accept-Language header (sent by browsers, and by REST callers
 * that set it). An empty list lets the organization's default decide.
 */
export function localesOf(locale: string, ctx: HandlerContext): readonly string[] {
  if (!locale) return parseAcceptLanguage(ctx.requestHeader.get("accept-language"));
  const canonical = canonicalLocale(locale);
  if (!canonical) throw invalidArgument("locale", "a BCP 47 language tag such as en, de-CH or pt-BR");
  return [canonical];
}

/** The caller, as the rules need it: its address, its request id (for the event trail) and its call's signal. */
export const callerOf = (ctx: HandlerContext) => ({ address: ctx.values.get(clientAddressKey), requestId: ctx.values.get(requestIdKey), signal: ctx.signal });

/** Who made an admin call, for the event trail: its request id and admin token id. */
export const auditOf = (ctx: HandlerContext) => ({ requestId: ctx.values.get(requestIdKey), actor: ctx.values.get(adminTokenIdKey) });

/** A proof as the Verify RPCs answer it. */
export const proofMessage = (proof: Proof) => ({
  identity: identityToProto(proof.identity),
  token: proof.token,
  tokenExpiresAt: timestampFromDate(proof.expiresAt),
  returnUrl: proof.returnUrl,
});
