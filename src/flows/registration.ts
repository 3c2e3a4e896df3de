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
import { identityState } from "./identities.ts";
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
  const { orgs, codes, limits } = deps;
  return {
    // The same answer whether or not the username was free.
    async register(req, ctx) {
      const org = await orgs.resolve(req.orgId, req.tenantId);
      await limits.enforce(org?.id ?? (req.orgId || req.tenantId), limits.sendKeys(org, "registration", req.username, ctx));
      if (!org?.settings.selfServiceSignup) {
        throw apiError(Code.PermissionDenied, Reason.permissionDenied, "self-service sign-up is not enabled for this organization");
      }
      try {
        await createPendingIdentity(deps, org, req.username, true);
      } catch (err) {
        if (!(err instanceof UsernameTaken)) throw err;
        // Taken: a pending identity gets a fresh code, an active one a notice.
        const resent = await codes.issue({ org, purpose: "registration", target: { username: req.username }, state: "pending", mail: "registration" });
        if (!resent.issued && (await identityState(deps.sql, org.id, req.username)) === "active") {
          await codes.queueNotice(org, "already_registered", req.username, "registration");
        }
      }
      return SUCCESS;
    },

    async resendRegistrationCode(req, ctx) {
      await publicSend(deps, ctx, { ...req, purpose: "registration", state: "pending", mail: "registration" });
      return SUCCESS;
    },

    // Consumes the code and makes the pending identity active, in one statement.
    completeRegistration: (req, ctx) => verifyByUsername(deps, req, "registration", "pending", ctx.signal, true),
  };
}
