import { Code, type ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import { CodePurpose, CourierMessageSchema, CourierMessageStatus, OrganizationSettingsSchema } from "../../gen/codegate/v1/types_pb.ts";
import { oneIn, organizationGuessChance } from "../codes/guess-chance.ts";
import type { Purpose } from "../config/config.ts";
import { formatMs, parseDuration } from "../config/env.ts";
import { newOrgId, newTenantId } from "../codes/random.ts";
import type { FlowDeps } from "../flows/deps.ts";
import { createPendingIdentity, UsernameTaken } from "../flows/registration.ts";
import { courierStatuses, IdentityEntity, OrganizationEntity, type CourierStatusName } from "../storage/entities.ts";
import type { Row } from "../storage/sql.ts";
import { apiError, invalidArgument, notFound, Reason } from "../transport/errors.ts";
import { identityStateName, identityToProto, organizationToProto, settingsToJson } from "../transport/mapping.ts";
import { DEFAULT_PAGE_SIZE, decodePageToken, pageOf, type Cursor } from "./paging.ts";

const DEFAULT_RECOVERY_MS = 3_600_000;
const MAX_RECOVERY_MS = 30 * 24 * 3_600_000;

const after = (cursor: Cursor | undefined) =>
  cursor ? { $or: [{ createdAt: { $gt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { $gt: cursor.id } }] } : {};

const purposeName: Partial<Record<CodePurpose, Purpose>> = {
  [CodePurpose.LOGIN]: "login",
  [CodePurpose.REGISTRATION]: "registration",
  [CodePurpose.RECOVERY]: "recovery",
};
const purposeProto = Object.fromEntries(Object.entries(purposeName).map(([k, v]) => [v, Number(k)])) as Record<string, CodePurpose>;
const statusProto: Record<CourierStatusName, CourierMessageStatus> = {
  queued: CourierMessageStatus.QUEUED,
  sent: CourierMessageStatus.SENT,
  abandoned: CourierMessageStatus.ABANDONED,
};

/** AdminService: organizations, identities, codes and the mail queue. */
export function adminService(deps: FlowDeps): ServiceImpl<typeof AdminService> {
  const { app, sql, codes } = deps;

  async function findIdentity(identityId: string) {
    const identity = await app.em().findOne(IdentityEntity, { id: identityId });
    if (!identity) throw notFound(`identity ${identityId}`);
    return identity;
  }

  return {
    async createOrganization(req) {
      const settings = req.settings ?? create(OrganizationSettingsSchema);
      const guess = organizationGuessChance(app.config, settings);
      if (guess.chance > app.config.maxGuessChance) {
        throw invalidArgument(
          "settings",
          `codes and limits that keep the worst-case chance of guessing an account's code within a day at most ${oneIn(app.config.maxGuessChance)} ` +
            `(these allow ${oneIn(guess.chance)}: ${guess.sendsPerDay} codes per purpose and ${guess.failuresPerDay} wrong guesses per username a day); ` +
            `lengthen the codes, widen their alphabets, or tighten send_per_username or verify_failures_per_username`,
        );
      }
      const em = app.em();
      const org = em.create(OrganizationEntity, {
        id: newOrgId(),
        tenantId: req.tenantId || newTenantId(),
        name: req.name,
        settings: settingsToJson(req.settings),
        createdAt: app.clock.now(),
      });
      await em.flush();
      return { organization: organizationToProto(org) };
    },

    async getOrganization(req) {
      const org = await app.em().findOne(OrganizationEntity, { id: req.orgId });
      if (!org) throw notFound(`organization ${req.orgId}`);
      return { organization: organizationToProto(org) };
    },

    async listOrganizations(req) {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const rows = await app.em().find(OrganizationEntity, after(decodePageToken(req.pageToken)), {
        orderBy: { createdAt: "asc", id: "asc" },
        limit: size + 1,
      });
      const page = pageOf(rows, size);
      return { organizations: page.items.map(organizationToProto), nextPageToken: page.next };
    },

    async createIdentity(req) {
      const org = await deps.orgs.resolve(req.orgId, "");
      if (!org) throw notFound(`organization ${req.orgId}`);
      try {
        const identity = await createPendingIdentity(deps, org, req.username, !req.skipRegistrationCode);
        return { identity: identityToProto(identity) };
      } catch (err) {
        if (err instanceof UsernameTaken) {
          throw apiError(Code.AlreadyExists, Reason.alreadyExists, `username: ${req.username} already exists in organization ${org.id}`, {
            field: "username",
          });
        }
        throw err;
      }
    },

    async getIdentity(req) {
      return { identity: identityToProto(await findIdentity(req.identityId)) };
    },

    async listIdentities(req) {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const rows = await app.em().find(
        IdentityEntity,
        { orgId: req.orgId, ...after(decodePageToken(req.pageToken)) },
        { orderBy: { createdAt: "asc", id: "asc" }, limit: size + 1 },
      );
      const page = pageOf(rows, size);
      return { identities: page.items.map(identityToProto), nextPageToken: page.next };
    },

    async setIdentityState(req) {
      const em = app.em();
      const identity = await em.findOne(IdentityEntity, { id: req.identityId });
      if (!identity) throw notFound(`identity ${req.identityId}`);
      identity.state = identityStateName(req.state)!;
      await em.flush();
      // A disabled identity's codes die with it.
      if (identity.state === "disabled") await codes.invalidate(identity.orgId, identity.id, undefined);
      return { identity: identityToProto(identity) };
    },

    async createRecoveryCode(req) {
      const lifespanMs = req.expiresIn === "" ? DEFAULT_RECOVERY_MS : parseDuration(req.expiresIn);
      if (lifespanMs === undefined || lifespanMs <= 0 || lifespanMs > MAX_RECOVERY_MS) {
        throw invalidArgument("expires_in", `expected a positive duration of at most ${formatMs(MAX_RECOVERY_MS)} (30 days), like 1h30m or 90s`);
      }
      const identity = await findIdentity(req.identityId);
      if (identity.state !== "active") {
        throw apiError(Code.FailedPrecondition, Reason.failedPrecondition, `identity ${identity.id} is ${identity.state}; only an active identity can recover`);
      }
      const org = await deps.orgs.resolve(identity.orgId, "");
      if (!org) throw notFound(`organization ${identity.orgId}`);
      // Bound to "admin": redeemed through the link's flow id only, and nothing public replaces it.
      const issued = await codes.issue({ org, purpose: "recovery", target: { identityId: identity.id }, state: "active", lifespanMs, adminIssued: true });
      if (!issued.issued) throw notFound(`identity ${identity.id}`);
      return {
        expiresAt: timestampFromDate(issued.expiresAt),
        recoveryCode: issued.code,
        recoveryLink: `${app.config.publicUrl}/recovery?flow=${issued.id}`,
      };
    },

    async invalidateCodes(req) {
      const identity = await findIdentity(req.identityId);
      const count = await codes.invalidate(identity.orgId, identity.id, purposeName[req.purpose]);
      return { invalidatedCount: count };
    },

    async listCourierMessages(req) {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const cursor = decodePageToken(req.pageToken);
      const status = courierStatuses.find((s) => statusProto[s] === req.status) ?? "";
      const rows = await sql.query(
        `select org_id, id, recipient, subject, purpose, status, send_count, last_error, created_at, updated_at
         from courier_message
         where org_id = $1 and ($2 = '' or status = $2)
           and ($3::timestamptz is null or (created_at, id) < ($3::timestamptz, $4::uuid))
         order by created_at desc, id desc
         limit $5`,
        [req.orgId, status, cursor?.createdAt ?? null, cursor?.id ?? null, size + 1],
      );
      const page = pageOf(
        rows.map((r): Row & Cursor => ({ ...r, id: r.id, createdAt: new Date(r.created_at) })),
        size,
      );
      return {
        messages: page.items.map((r) =>
          create(CourierMessageSchema, {
            id: r.id,
            orgId: r.org_id,
            recipient: r.recipient,
            subject: r.subject,
            purpose: purposeProto[r.purpose] ?? CodePurpose.UNSPECIFIED,
            status: statusProto[r.status as CourierStatusName],
            sendCount: r.send_count,
            lastError: r.last_error ?? "",
            createdAt: timestampFromDate(new Date(r.created_at)),
            updatedAt: timestampFromDate(new Date(r.updated_at)),
          }),
        ),
        nextPageToken: page.next,
      };
    },
  };
}
