// Passwordless login: SendLoginCode mails a code to an active identity;
// VerifyLoginCode consumes it and answers with a proof token.
import type { ServiceImpl } from "@connectrpc/connect";
import type { LoginService } from "../../gen/codegate/v1/login_pb.ts";
import { SUCCESS, type FlowDeps } from "./deps.ts";
import { publicSend } from "./send.ts";
import { verifyByUsername } from "./verify.ts";

export function loginService(deps: FlowDeps): ServiceImpl<typeof LoginService> {
  return {
    // The same answer for every username: nobody learns whether an account exists.
    async sendLoginCode(req, ctx) {
      await publicSend(deps, ctx, { ...req, purpose: "login", state: "active", mail: "login" });
      return SUCCESS;
    },

    verifyLoginCode: (req, ctx) => verifyByUsername(deps, ctx, req, "login", "active"),
  };
}
