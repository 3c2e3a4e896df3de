// The domain as protobuf messages, and back: the services are the only place
// where the two meet.
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  CodePurpose,
  DeliveryChannel,
  MailKind as MailKindProto,
  IdentitySchema,
  IdentityState as IdentityStateProto,
  OrganizationSchema,
  OrganizationSettingsSchema,
  type Identity as IdentityMessage,
  type Organization,
  type OrganizationSettings,
} from "../../gen/codegate/v1/types_pb.ts";
import type { Identity, IdentityState } from "../domain/identity.ts";
import type { Org, OrgSettings } from "../domain/organization.ts";
import type { ApiChannel, Channel } from "../domain/outbox.ts";
import type { Purpose } from "../domain/purpose.ts";
import type { MailKind } from "../rules/mail/kinds.ts";

export const mailKindOf: Partial<Record<MailKindProto, MailKind>> = {
  [MailKindProto.LOGIN]: "login",
  [MailKindProto.REGISTRATION]: "registration",
  [MailKindProto.RECOVERY]: "recovery",
  [MailKindProto.ALREADY_REGISTERED]: "already_registered",
  [MailKindProto.UNKNOWN_RECOVERY]: "unknown_recovery",
};
export const mailKindProto: Readonly<Record<string, MailKindProto | undefined>> = {
  login: MailKindProto.LOGIN,
  registration: MailKindProto.REGISTRATION,
  recovery: MailKindProto.RECOVERY,
  already_registered: MailKindProto.ALREADY_REGISTERED,
  unknown_recovery: MailKindProto.UNKNOWN_RECOVERY,
};

export const purposeOf: Partial<Record<CodePurpose, Purpose>> = {
  [CodePurpose.LOGIN]: "login",
  [CodePurpose.REGISTRATION]: "registration",
  [CodePurpose.RECOVERY]: "recovery",
};
export const purposeProto: Readonly<Record<string, CodePurpose | undefined>> = {
  login: CodePurpose.LOGIN,
  registration: CodePurpose.REGISTRATION,
  recovery: CodePurpose.RECOVERY,
};

export const channelProto: Record<Channel, DeliveryChannel> = {
  smtp: DeliveryChannel.SMTP,
  mail_api: DeliveryChannel.MAIL_API,
  sms: DeliveryChannel.SMS,
};
export const channelOf: Partial<Record<DeliveryChannel, ApiChannel>> = {
  [DeliveryChannel.MAIL_API]: "mail_api",
  [DeliveryChannel.SMS]: "sms",
};

const stateToProto: Record<IdentityState, IdentityStateProto> = {
  pending: IdentityStateProto.PENDING,
  active: IdentityStateProto.ACTIVE,
  disabled: IdentityStateProto.DISABLED,
};

export const identityStateOf = (s: IdentityStateProto): IdentityState | undefined =>
  (Object.keys(stateToProto) as IdentityState[]).find((k) => stateToProto[k] === s);

export function identityToProto(identity: Identity): IdentityMessage {
  return create(IdentitySchema, {
    id: identity.id,
    orgId: identity.orgId,
    username: identity.username,
    state: stateToProto[identity.state],
    createdAt: timestampFromDate(identity.createdAt),
    registeredAt: identity.registeredAt ? timestampFromDate(identity.registeredAt) : undefined,
    phoneNumber: identity.phoneNumber ?? "",
  });
}

/** Settings as the domain keeps them: their JSON encoding (see domain/organization.ts). */
export const settingsOf = (s: OrganizationSettings | undefined): OrgSettings =>
  toJson(OrganizationSettingsSchema, s ?? create(OrganizationSettingsSchema)) as OrgSettings;

export const settingsToProto = (s: OrgSettings): OrganizationSettings =>
  fromJson(OrganizationSettingsSchema, s as JsonValue, { ignoreUnknownFields: true });

export function organizationToProto(org: Org): Organization {
  return create(OrganizationSchema, {
    id: org.id,
    name: org.name,
    tenantId: org.tenantId,
    createdAt: timestampFromDate(org.createdAt),
    settings: settingsToProto(org.settings),
  });
}
