// What the public services share: the caller as the rules need it, and the
// answer of a successful verification.
import type { HandlerContext } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Proof } from "../rules/flows.ts";
import { clientAddressKey } from "./context-keys.ts";
import { identityToProto } from "./mapping.ts";

/** The caller, as the rules need it: its address and its call's signal. */
export const callerOf = (ctx: HandlerContext) => ({ address: ctx.values.get(clientAddressKey), signal: ctx.signal });

/** A proof as the Verify RPCs answer it. */
export const proofMessage = (proof: Proof) => ({
  identity: identityToProto(proof.identity),
  token: proof.token,
  tokenExpiresAt: timestampFromDate(proof.expiresAt),
});
