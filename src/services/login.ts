// LoginService: SendLoginCode mails a code to an active identity;
// VerifyLoginCode consumes it and answers with a proof token.
import type { ServiceImpl } from "@connectrpc/connect";
import type { LoginService } from "../../gen/codegate/v1/login_pb.ts";
import { sendCode, verifyCode } from "../rules/flows.ts";
import { callerOf, localesOf, proofMessage } from "./calls.ts";
import { SUCCESS, type ServiceDeps } from "./deps.ts";
import { answeringDomainErrors } from "./errors.ts";

export function loginService(deps: ServiceDeps): ServiceImpl<typeof LoginService> {
  return answeringDomainErrors<ServiceImpl<typeof LoginService>>({
    // The same answer for every username: nobody learns whether an account exists.
    async sendLoginCode(req, ctx) {
      await sendCode(deps, { ...req, ...callerOf(ctx), locales: localesOf(req.locale, ctx), purpose: "login", requiredState: "active", mail: "login" });
      return SUCCESS;
    },

    async verifyLoginCode(req, ctx) {
      return proofMessage(await verifyCode(deps, { ...req, ...callerOf(ctx), purpose: "login", requiredState: "active" }));
    },
  });
}
