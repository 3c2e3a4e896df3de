// Rows to protobuf messages.
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  IdentitySchema,
  IdentityState,
  OrganizationSchema,
  OrganizationSettingsSchema,
  type Identity,
  type Organization,
  type OrganizationSettings,
} from "../../gen/codegate/v1/types_pb.ts";
import type { IdentityStateName } from "../storage/entities.ts";

export interface IdentityRow {
  id: string;
  orgId: string;
  username: string;
  state: IdentityStateName;
  createdAt: Date;
  registeredAt?: Date | null;
}

export interface OrganizationRow {
  id: string;
  tenantId: string;
  name: string;
  settings: Record<string, unknown>;
  createdAt: Date;
}

const stateToProto: Record<IdentityStateName, IdentityState> = {
  pending: IdentityState.PENDING,
  active: IdentityState.ACTIVE,
  disabled: IdentityState.DISABLED,
};

export const identityStateName = (s: IdentityState): IdentityStateName | undefined =>
  (Object.keys(stateToProto) as IdentityStateName[]).find((k) => stateToProto[k] === s);

export function identityToProto(row: IdentityRow): Identity {
  return create(IdentitySchema, {
    id: row.id,
    orgId: row.orgId,
    username: row.username,
    state: stateToProto[row.state],
    createdAt: timestampFromDate(row.createdAt),
    registeredAt: row.registeredAt ? timestampFromDate(row.registeredAt) : undefined,
  });
}

export const settingsToJson = (s: OrganizationSettings | undefined) =>
  toJson(OrganizationSettingsSchema, s ?? create(OrganizationSettingsSchema)) as Record<string, unknown>;

export const settingsFromJson = (json: Record<string, unknown>) =>
  fromJson(OrganizationSettingsSchema, json as never, { ignoreUnknownFields: true });

export function organizationToProto(row: OrganizationRow): Organization {
  return create(OrganizationSchema, {
    id: row.id,
    name: row.name,
    tenantId: row.tenantId,
    createdAt: timestampFromDate(row.createdAt),
    settings: settingsFromJson(row.settings),
  });
}
