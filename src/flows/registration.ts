// Registration: an administrator's CreateIdentity (or self-service Register)
// makes a pending identity and mails it a code; CompleteRegistration consumes the
// code and makes the identity active.
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { RegistrationService } from "../../gen/codegate/v1/registration_pb.ts";
import { normalizeUsername } from "../codes/engine.ts";
import { isUniqueViolation, type Sql } from "../storage/sql.ts";
import { apiError, Reason } from "../transport/errors.ts";
import type { IdentityRow } from "../transport/mapping.ts";
import { SUCCESS, type FlowDeps } from "./deps.ts";
import { publicSend } from "./send.ts";
import { verifyByUsername } from "./verify.ts";
import type { Org } from "./organizations.ts";

export class UsernameTaken extends Error {}

/**
 * Inserts a pending identity and, unless skipped, issues its registration code
 * and queues the mail, all in one transaction.
 */
export async function createPendingIdentity(
  deps: FlowDeps,
  org: Org,
  username: string,
  sendCode: boolean,
): Promise<IdentityRow> {
  const now = deps.app.clock.now();
  const row: IdentityRow = { id: randomUUID(), orgId: org.id, username: username.trim(), state: "pending", createdAt: now, registeredAt: null };
  try {
    await deps.sql.transaction(async (tx: Sql) => {
      await tx.query(
        `insert into identity (org_id, id, username, username_normalized, state, created_at) values ($1, $2, $3, $4, 'pending', $5)`,
        [org.id, row.id, row.username, normalizeUsername(username), now],
      );
      if (sendCode) {
        await deps.codes.issue({ org, purpose: "registration", target: { identityId: row.id }, state: "pending", mail: "registration" }, tx);
      }
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new UsernameTaken();
    throw err;
  }
  return row;
}

export function registrationService(deps: FlowDeps): ServiceImpl<typeof RegistrationService> {
  const { orgs, limits } = deps;
  return {
    // The same answer whether the username was free, pending or taken, after the
    // same one statement: a new username gets a pending identity and a code, a
    // pending one a fresh code, an active one a notice.
    async register(req, ctx) {
      const org = await orgs.resolve(req.orgId, req.tenantId);
      if (!org?.settings.selfServiceSignup) {
        await limits.enforce(org?.id ?? (req.orgId || req.tenantId), limits.sendKeys(org, "registration", req.username, ctx));
        throw apiError(Code.PermissionDenied, Reason.permissionDenied, "self-service sign-up is not enabled for this organization");
      }
      await publicSend(deps, ctx, {
        ...req,
        purpose: "registration",
        state: "pending",
        mail: "registration",
        createPending: true,
        notice: () => ({ kind: "already_registered", when: "active" }),
      });
      return SUCCESS;
    },

    async resendRegistrationCode(req, ctx) {
      await publicSend(deps, ctx, { ...req, purpose: "registration", state: "pending", mail: "registration" });
      return SUCCESS;
    },

    // Consumes the code and makes the pending identity active, in one statement.
    completeRegistration: (req, ctx) => verifyByUsername(deps, ctx, req, "registration", "pending", true),
  };
}
