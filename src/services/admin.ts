// AdminService: organizations, identities, codes and the mail queue, over the
// rules of rules/admin.ts and the reads of the store.
import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import { CodePurpose, CourierMessageSchema, CourierMessageStatus, MailTemplateSchema, MailTemplateSource } from "../../gen/codegate/v1/types_pb.ts";
import { InvalidArgument, NotFound } from "../domain/errors.ts";
import type { MailStatus } from "../domain/outbox.ts";
import { mailStatuses } from "../domain/outbox.ts";
import { parseDuration } from "../lib/duration.ts";
import { createOrganization, createRecoveryCode, identityById, invalidateCodes, setIdentityPhoneNumber, setIdentityState, updateOrganizationSettings } from "../rules/admin.ts";
import { createPendingIdentity } from "../rules/flows.ts";
import { deleteMailTemplate, listMailTemplates, previewMailTemplate, setMailTemplate } from "../rules/mail-templates.ts";
import type { TemplateOrigin } from "../rules/mail/templates.ts";
import type { StoredTemplate } from "../store/mail-templates.ts";
import { listIdentities } from "../store/identities.ts";
import { getOrganization, listOrganizations } from "../store/organizations.ts";
import { listMails } from "../store/outbox.ts";
import type { ServiceDeps } from "./deps.ts";
import { answeringDomainErrors } from "./errors.ts";
import { auditOf, localesOf } from "./calls.ts";
import { eventHandlers } from "./events.ts";
import { channelProto, identityStateOf, identityToProto, mailKindOf, mailKindProto, organizationToProto, purposeOf, purposeProto, settingsOf } from "./mapping.ts";
import { CURSOR_IDS, DEFAULT_PAGE_SIZE, decodePageToken, pageOf } from "./paging.ts";

const statusProto: Record<MailStatus, CourierMessageStatus> = {
  queued: CourierMessageStatus.QUEUED,
  sent: CourierMessageStatus.SENT,
  abandoned: CourierMessageStatus.ABANDONED,
};

const sourceProto: Record<TemplateOrigin, MailTemplateSource> = {
  "built-in": MailTemplateSource.BUILT_IN,
  organization: MailTemplateSource.ORGANIZATION,
  draft: MailTemplateSource.DRAFT,
};

const templateToProto = (t: StoredTemplate) =>
  create(MailTemplateSchema, {
    orgId: t.orgId,
    kind: mailKindProto[t.kind],
    locale: t.locale,
    subject: t.subject,
    text: t.text,
    html: t.html,
    updatedAt: timestampFromDate(t.updatedAt),
  });

export function adminService(deps: ServiceDeps): ServiceImpl<typeof AdminService> {
  const events = eventHandlers(deps);
  const unary = answeringDomainErrors<Omit<ServiceImpl<typeof AdminService>, "watchEvents">>({
    async createOrganization(req, ctx) {
      const org = await createOrganization(deps, { name: req.name, tenantId: req.tenantId, settings: settingsOf(req.settings) }, auditOf(ctx));
      return { organization: organizationToProto(org) };
    },

    async getOrganization(req) {
      const org = await getOrganization(deps.orm, req.orgId);
      if (!org) throw new NotFound(`organization ${req.orgId}`);
      return { organization: organizationToProto(org) };
    },

    async listOrganizations(req) {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const page = pageOf(await listOrganizations(deps.sql, decodePageToken(req.pageToken, CURSOR_IDS.organization), size), size);
      return { organizations: page.items.map(organizationToProto), nextPageToken: page.next };
    },

    async createIdentity(req, ctx) {
      const org = await deps.orgs.resolve(req.orgId, "");
      if (!org) throw new NotFound(`organization ${req.orgId}`);
      return {
        identity: identityToProto(await createPendingIdentity(deps, org, req.username, !req.skipRegistrationCode, localesOf(req.locale, ctx), req.phoneNumber || null, auditOf(ctx))),
      };
    },

    async getIdentity(req) {
      return { identity: identityToProto(await identityById(deps, req.identityId)) };
    },

    async listIdentities(req) {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const page = pageOf(await listIdentities(deps.sql, req.orgId, decodePageToken(req.pageToken, CURSOR_IDS.uuid), size), size);
      return { identities: page.items.map(identityToProto), nextPageToken: page.next };
    },

    async setIdentityPhoneNumber(req, ctx) {
      return { identity: identityToProto(await setIdentityPhoneNumber(deps, req.identityId, req.phoneNumber, auditOf(ctx))) };
    },

    async setIdentityState(req, ctx) {
      return { identity: identityToProto(await setIdentityState(deps, req.identityId, identityStateOf(req.state)!, auditOf(ctx))) };
    },

    async createRecoveryCode(req, ctx) {
      const lifespanMs = req.expiresIn === "" ? undefined : parseDuration(req.expiresIn);
      if (lifespanMs === undefined && req.expiresIn !== "") throw new InvalidArgument("expires_in", "expected a positive duration of at most 720h (30 days), like 1h30m or 90s");
      const issued = await createRecoveryCode(deps, req.identityId, lifespanMs, auditOf(ctx));
      return { expiresAt: timestampFromDate(issued.expiresAt), recoveryCode: issued.code, recoveryLink: issued.link };
    },

    async invalidateCodes(req, ctx) {
      return { invalidatedCount: await invalidateCodes(deps, req.identityId, purposeOf[req.purpose], auditOf(ctx)) };
    },

    async listCourierMessages(req) {
      const size = req.pageSize || DEFAULT_PAGE_SIZE;
      const status = mailStatuses.find((s) => statusProto[s] === req.status) ?? "";
      const page = pageOf(await listMails(deps.sql, req.orgId, status, decodePageToken(req.pageToken, CURSOR_IDS.uuid), size), size);
      return {
        messages: page.items.map((m) =>
          create(CourierMessageSchema, {
            id: m.id,
            orgId: m.orgId,
            recipient: m.recipient,
            subject: m.subject,
            purpose: purposeProto[m.purpose] ?? CodePurpose.UNSPECIFIED,
            channel: channelProto[m.channel],
            status: statusProto[m.status],
            sendCount: m.sendCount,
            lastError: m.lastError ?? "",
            createdAt: timestampFromDate(m.createdAt),
            updatedAt: timestampFromDate(m.updatedAt),
          }),
        ),
        nextPageToken: page.next,
      };
    },

    async updateOrganizationSettings(req, ctx) {
      return { organization: organizationToProto(await updateOrganizationSettings(deps, req.orgId, settingsOf(req.settings), auditOf(ctx))) };
    },

    // The proto's rules refuse an unspecified kind before these run.
    async setMailTemplate(req, ctx) {
      const source = { subject: req.subject, text: req.text, html: req.html };
      return { template: templateToProto(await setMailTemplate(deps, { orgId: req.orgId, kind: mailKindOf[req.kind]!, locale: req.locale, source }, auditOf(ctx))) };
    },

    async listMailTemplates(req) {
      const { templates, builtinLocales } = await listMailTemplates(deps, req.orgId);
      return { templates: templates.map(templateToProto), builtInLocales: [...builtinLocales] };
    },

    async deleteMailTemplate(req, ctx) {
      return { deleted: await deleteMailTemplate(deps, { orgId: req.orgId, kind: mailKindOf[req.kind]!, locale: req.locale }, auditOf(ctx)) };
    },

    async previewMailTemplate(req) {
      const draft = req.draft ? { subject: req.draft.subject, text: req.draft.text, html: req.draft.html } : undefined;
      const preview = await previewMailTemplate(deps, { orgId: req.orgId, kind: mailKindOf[req.kind]!, locale: req.locale, draft });
      return { ...preview.content, locale: preview.locale, source: sourceProto[preview.origin] };
    },

    listEvents: (req) => events.listEvents(req),
  });
  // A stream is not wrapped by answeringDomainErrors (which awaits a unary answer): its errors are Connect errors already.
  return { ...unary, watchEvents: (req, ctx) => events.watchEvents(req, ctx) };
}
