// Passwordless login: SendLoginCode mails a code to an active identity;
// VerifyLoginCode consumes it and answers with a proof token.
import type { ServiceImpl } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { LoginService } from "../../gen/codegate/v1/login_pb.ts";
import { invalidCode } from "../transport/errors.ts";
import { identityToProto } from "../transport/mapping.ts";
import { SUCCESS, type FlowDeps } from "./deps.ts";
import { publicSend } from "./send.ts";

export function loginService(deps: FlowDeps): ServiceImpl<typeof LoginService> {
  const { app, orgs, codes, tokens, limits } = deps;
  return {
    // The same answer for every username: nobody learns whether an account exists.
    async sendLoginCode(req, ctx) {
      await publicSend(deps, ctx, { ...req, purpose: "login", state: "active", mail: "login" });
      return SUCCESS;
    },

    async verifyLoginCode(req) {
      const org = await orgs.resolve(req.orgId, req.tenantId);
      if (!org) throw invalidCode();
      const identity = await limits.verify(org, req.username, () =>
        codes.verify({ org, purpose: "login", target: { username: req.username }, state: "active", code: req.code }),
      );
      const proof = await tokens.issue(identity, "login", app.clock.now());
      return { identity: identityToProto(identity), token: proof.token, tokenExpiresAt: timestampFromDate(proof.expiresAt) };
    },
  };
}
