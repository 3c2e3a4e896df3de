// Account recovery: a mailed code proves that the user started the recovery.
// An administrator's CreateRecoveryCode makes a code of the same kind, handed
// over in person, with a link to the recovery page (its flow id names the code).
import type { ServiceImpl } from "@connectrpc/connect";
import type { RecoveryService } from "../../gen/codegate/v1/recovery_pb.ts";
import { invalidCode } from "../transport/errors.ts";
import { SUCCESS, type FlowDeps } from "./deps.ts";
import { identityState } from "./identities.ts";
import { publicSend } from "./send.ts";
import { proofFor, verifyByUsername } from "./verify.ts";

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function recoveryService(deps: FlowDeps): ServiceImpl<typeof RecoveryService> {
  const { sql, orgs, codes, limits } = deps;
  return {
    async sendRecoveryCode(req, ctx) {
      const { org, sent } = await publicSend(deps, ctx, { ...req, purpose: "recovery", state: "active", mail: "recovery" });
      if (org && sent && !sent.issued && org.settings.notifyUnknownRecovery && EMAIL.test(req.username.trim())) {
        if ((await identityState(sql, org.id, req.username)) === undefined) {
          await codes.queueNotice(org, "unknown_recovery", req.username.trim(), "recovery");
        }
      }
      return SUCCESS;
    },

    async verifyRecoveryCode(req, ctx) {
      if (!req.flowId) return verifyByUsername(deps, req, "recovery", "active", ctx.signal);
      // A flow id names its code; a username or organization given beside it must agree.
      const org = req.orgId || req.tenantId ? await orgs.resolve(req.orgId, req.tenantId) : undefined;
      if ((req.orgId || req.tenantId) && !org) throw invalidCode();
      const target = { flowId: req.flowId, username: req.username };
      const failureLimits = limits.verifyKeys(org, req.username);
      const identity = await codes.verify({ org, purpose: "recovery", target, state: "active", code: req.code, failureLimits, signal: ctx.signal });
      return proofFor(deps, identity, "recovery");
    },
  };
}
