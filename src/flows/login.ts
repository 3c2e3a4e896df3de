// Passwordless login: SendLoginCode mails a code to an active identity;
// VerifyLoginCode consumes it and answers with a proof token.
import type { ServiceImpl } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { LoginService } from "../../gen/codegate/v1/login_pb.ts";
import { invalidCode } from "../transport/errors.ts";
import { identityToProto } from "../transport/mapping.ts";
import { SUCCESS, type FlowDeps } from "./deps.ts";

export function loginService({ app, orgs, codes, tokens }: FlowDeps): ServiceImpl<typeof LoginService> {
  return {
    // The same answer for every username: nobody learns whether an account exists.
    async sendLoginCode(req) {
      const org = await orgs.resolve(req.orgId, req.tenantId);
      if (org) await codes.issue({ org, purpose: "login", target: { username: req.username }, state: "active", mail: "login" });
      return SUCCESS;
    },

    async verifyLoginCode(req) {
      const org = await orgs.resolve(req.orgId, req.tenantId);
      if (!org) throw invalidCode();
      const identity = await codes.verify({ org, purpose: "login", target: { username: req.username }, state: "active", code: req.code });
      const proof = await tokens.issue(identity, "login", app.clock.now());
      return { identity: identityToProto(identity), token: proof.token, tokenExpiresAt: timestampFromDate(proof.expiresAt) };
    },
  };
}
