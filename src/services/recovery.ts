// RecoveryService: a mailed code proves that the user started the recovery. An
// administrator's CreateRecoveryCode makes a code handed over in person, with a
// link to the recovery page: its flow id names the code, which is redeemed
// through that flow id only and which nothing public replaces.
import type { ServiceImpl } from "@connectrpc/connect";
import type { RecoveryService } from "../../gen/codegate/v1/recovery_pb.ts";
import { sendCode, verifyAdminRecovery, verifyCode } from "../rules/flows.ts";
import { SUCCESS, type ServiceDeps } from "./deps.ts";
import { answeringDomainErrors } from "./errors.ts";
import { callerOf, localesOf, proofMessage } from "./calls.ts";

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function recoveryService(deps: ServiceDeps): ServiceImpl<typeof RecoveryService> {
  return answeringDomainErrors<ServiceImpl<typeof RecoveryService>>({
    async sendRecoveryCode(req, ctx) {
      // The notice for an address without an account is decided in the send's own statement.
      const mailable = EMAIL.test(req.username.trim());
      await sendCode(deps, {
        ...req,
        ...callerOf(ctx),
        locales: localesOf(req.locale, ctx),
        purpose: "recovery",
        requiredState: "active",
        mail: "recovery",
        notice: (org) => (org.settings.notifyUnknownRecovery && mailable ? { kind: "unknown_recovery", when: "unknown" } : undefined),
      });
      return SUCCESS;
    },

    async verifyRecoveryCode(req, ctx) {
      const proof = req.flowId
        ? await verifyAdminRecovery(deps, { ...req, ...callerOf(ctx) })
        : await verifyCode(deps, { ...req, ...callerOf(ctx), purpose: "recovery", requiredState: "active" });
      return proofMessage(proof);
    },
  });
}
