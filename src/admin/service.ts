import { Code, type ServiceImpl } from "@connectrpc/connect";
import { UniqueConstraintViolationException } from "@mikro-orm/core";
import { randomUUID } from "node:crypto";
import type { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import type { AppContext } from "../context.ts";
import { normalizeUsername } from "../codes/engine.ts";
import { newOrgId, newTenantId } from "../codes/random.ts";
import { IdentityEntity, OrganizationEntity } from "../storage/entities.ts";
import { apiError, notFound, Reason } from "../transport/errors.ts";
import { identityStateName, identityToProto, organizationToProto, settingsToJson } from "../transport/mapping.ts";
import { DEFAULT_PAGE_SIZE, decodePageToken, pageOf, type Cursor } from "./paging.ts";

const after = (cursor: Cursor | undefined) =>
  cursor ? { $or: [{ createdAt: { $gt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { $gt: cursor.id } }] } : {};

/** The organization and identity administration of AdminService. */
export function adminService(app: AppContext): Partial<ServiceImpl<typeof AdminService>> {
  return {
    async createOrganization(req) {
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
      const em = app.em();
      const org = await em.findOne(OrganizationEntity, { id: req.orgId });
      if (!org) throw notFound(`organization ${req.orgId}`);
      const identity = em.create(IdentityEntity, {
        orgId: org.id,
        id: randomUUID(),
        username: req.username.trim(),
        usernameNormalized: normalizeUsername(req.username),
        state: "pending",
        createdAt: app.clock.now(),
        registeredAt: null,
      });
      try {
        await em.flush();
      } catch (err) {
        if (err instanceof UniqueConstraintViolationException) {
          throw apiError(Code.AlreadyExists, Reason.alreadyExists, `username: ${req.username} already exists in organization ${org.id}`, {
            field: "username",
          });
        }
        throw err;
      }
      return { identity: identityToProto(identity) };
    },

    async getIdentity(req) {
      const identity = await app.em().findOne(IdentityEntity, { id: req.identityId });
      if (!identity) throw notFound(`identity ${req.identityId}`);
      return { identity: identityToProto(identity) };
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
      return { identity: identityToProto(identity) };
    },
  };
}
