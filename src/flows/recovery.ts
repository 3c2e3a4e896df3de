// Account recovery: a mailed code proves that the user started the recovery.
// An administrator's CreateRecoveryCode makes a code of the same kind, handed
// over in person, with a link to the recovery page: its flow id names the code,
// which is redeemed through that flow id only and which nothing public replaces.
import type { ServiceImpl } from "@connectrpc/connect";
import type { RecoveryService } from "../../gen/codegate/v1/recovery_pb.ts";
import { invalidCode } from "../transport/errors.ts";
import { SUCCESS, type FlowDeps } from "./deps.ts";
import { publicSend } from "./send.ts";
import { proofFor, verifyByUsername } from "./verify.ts";

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function recoveryService(deps: FlowDeps): ServiceImpl<typeof RecoveryService> {
  const { orgs, codes, limits } = deps;
  return {
    async sendRecoveryCode(req, ctx) {
      // The notice for an address without an account is decided in the send's own statement.
      const mailable = EMAIL.test(req.username.trim());
      await publicSend(deps, ctx, {
        ...req,
        purpose: "recovery",
        state: "active",
        mail: "recovery",
        notice: (org) => (org.settings.notifyUnknownRecovery && mailable ? { kind: "unknown_recovery", when: "unknown" } : undefined),
      });
      return SUCCESS;
    },

    async verifyRecoveryCode(req, ctx) {
      if (!req.flowId) return verifyByUsername(deps, ctx, req, "recovery", "active");
      // A flow id names its code; a username or organization given beside it must agree.
      const org = req.orgId || req.tenantId ? await orgs.resolve(req.orgId, req.tenantId) : undefined;
      if ((req.orgId || req.tenantId) && !org) throw invalidCode();
      const identity = await codes.verify({
        org,
        purpose: "recovery",
        target: { flowId: req.flowId, username: req.username },
        state: "active",
        code: req.code,
        addressLimits: limits.verifyAddressKeys(org, ctx),
        signal: ctx.signal,
      });
      return proofFor(deps, identity, "recovery");
    },
  };
}
