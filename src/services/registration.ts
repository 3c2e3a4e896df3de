// RegistrationService: an administrator's CreateIdentity (or self-service
// Register) makes a pending identity and mails it a code; CompleteRegistration
// consumes the code and makes the identity active.
import type { ServiceImpl } from "@connectrpc/connect";
import type { RegistrationService } from "../../gen/codegate/v1/registration_pb.ts";
import { PermissionDenied } from "../domain/errors.ts";
import { sendCode, verifyCode } from "../rules/flows.ts";
import { SUCCESS, type ServiceDeps } from "./deps.ts";
import { answeringDomainErrors } from "./errors.ts";
import { callerOf, localesOf, proofMessage } from "./calls.ts";

export function registrationService(deps: ServiceDeps): ServiceImpl<typeof RegistrationService> {
  return answeringDomainErrors<ServiceImpl<typeof RegistrationService>>({
    // The same answer whether the username was free, pending or taken, after the
    // same one statement: a new username gets a pending identity and a code, a
    // pending one a fresh code, an active one a notice.
    async register(req, ctx) {
      const caller = callerOf(ctx);
      const locales = localesOf(req.locale, ctx);
      const org = await deps.orgs.resolve(req.orgId, req.tenantId);
      if (!org?.settings.selfServiceSignup) {
        await deps.limits.enforce(org?.id ?? (req.orgId || req.tenantId), deps.limits.sendKeys(org, "registration", req.username, caller.address));
        throw new PermissionDenied("self-service sign-up is not enabled for this organization");
      }
      await sendCode(deps, {
        ...req,
        ...caller,
        locales,
        purpose: "registration",
        requiredState: "pending",
        mail: "registration",
        createPending: true,
        notice: () => ({ kind: "already_registered", when: "active" }),
      });
      return SUCCESS;
    },

    async resendRegistrationCode(req, ctx) {
      await sendCode(deps, { ...req, ...callerOf(ctx), locales: localesOf(req.locale, ctx), purpose: "registration", requiredState: "pending", mail: "registration" });
      return SUCCESS;
    },

    // Consumes the code and makes the pending identity active, in one statement.
    async completeRegistration(req, ctx) {
      return proofMessage(await verifyCode(deps, { ...req, ...callerOf(ctx), purpose: "registration", requiredState: "pending", activate: true }));
    },
  });
}
