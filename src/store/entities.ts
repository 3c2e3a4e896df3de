// The tables, as MikroORM entities. Every row carries its organization id and
// every key starts with it, so the data can be distributed by organization
// (Citus) when one database is not enough. Hot paths use the SQL in the
// repositories; these entities drive the admin reads and the schema checks.
import { defineEntity, p } from "@mikro-orm/core";
import { identityStates } from "../domain/identity.ts";
import { mailStatuses } from "../domain/outbox.ts";

export const OrganizationEntity = defineEntity({
  name: "Organization",
  tableName: "organization",
  properties: {
    id: p.text().primary(),
    tenantId: p.text().index("organization_tenant_id_idx"),
    name: p.text(),
    settings: p.json<Record<string, unknown>>(),
    createdAt: p.datetime(),
  },
  // ListOrganizations reads pages in creation order; partial so that only it can (see its migration).
  indexes: [{ name: "organization_created_idx", expression: "create index organization_created_idx on organization (created_at, id) where created_at > '-infinity'" }],
});

export const IdentityEntity = defineEntity({
  name: "Identity",
  tableName: "identity",
  properties: {
    orgId: p.text().primary(),
    id: p.uuid().primary(),
    username: p.text(),
    /** Lower-cased and trimmed: usernames are unique and matched case-insensitively. */
    usernameNormalized: p.text(),
    state: p.enum(identityStates),
    createdAt: p.datetime(),
    registeredAt: p.datetime().nullable(),
    /** E.164; where codes handed to the SMS channel go. */
    phoneNumber: p.text().nullable(),
  },
  uniques: [{ name: "identity_org_username_key", properties: ["orgId", "usernameNormalized"] }],
  indexes: [
    // GetIdentity and the admin calls find an identity by its id alone.
    { name: "identity_id_idx", properties: ["id"] },
    // ListIdentities reads an organization's identities in creation order; partial so that only it can (see its migration).
    {
      name: "identity_org_created_idx",
      expression: "create index identity_org_created_idx on identity (org_id, created_at, id) where created_at > '-infinity'",
    },
  ],
});

export const CodeEntity = defineEntity({
  name: "Code",
  tableName: "code",
  properties: {
    orgId: p.text().primary(),
    id: p.uuid().primary(),
    identityId: p.uuid(),
    purpose: p.text(),
    /** '' (unbound), 'admin' (redeemed through its flow id only), or 'b:' and the SHA-256 of the application's binding. */
    binding: p.text().default(""),
    /** A bound code's place among the few an identity may have live per purpose. */
    slot: p.smallint().nullable(),
    /** HMAC-SHA-256 of the code under the key named by keyId; never the code. */
    codeHash: p.type("blob"),
    /** What the hash was taken over besides the code: 1, the row id; 2, the organization, username, purpose and binding. */
    hashInput: p.smallint().default(1),
    keyId: p.text(),
    createdAt: p.datetime(),
    expiresAt: p.datetime(),
    attempts: p.integer().default(0),
    maxAttempts: p.integer(),
    consumedAt: p.datetime().nullable(),
    /** Set when the code can never verify again (consumed, replaced, invalidated). */
    deadAt: p.datetime().nullable(),
  },
  indexes: [
    {
      // "At most one live code per identity, purpose and binding", kept by the database.
      // Partial, so that it holds live rows only: history never slows it.
      name: "code_live_key",
      expression: "create unique index code_live_key on code (org_id, identity_id, purpose, binding) where dead_at is null",
    },
    {
      // Bound codes take slots: at most as many live per identity and purpose as there are slots.
      name: "code_live_slot_key",
      expression: "create unique index code_live_slot_key on code (org_id, identity_id, purpose, slot) where dead_at is null and slot is not null",
    },
    {
      // An admin's recovery link names its code by id alone (the flow id).
      name: "code_recovery_flow_idx",
      expression: "create index code_recovery_flow_idx on code (id) where purpose = 'recovery' and dead_at is null",
    },
    // Retention's, by age (20261207-retention-order.ts): partial on what only its statements state.
    { name: "code_dead_at_idx", expression: "create index code_dead_at_idx on code (dead_at) where dead_at < 'infinity'" },
    { name: "code_expires_at_idx", expression: "create index code_expires_at_idx on code (expires_at) where expires_at < 'infinity'" },
  ],
});

export const CourierMessageEntity = defineEntity({
  name: "CourierMessage",
  tableName: "courier_message",
  properties: {
    orgId: p.text().primary(),
    id: p.uuid().primary(),
    purpose: p.text(),
    recipient: p.text(),
    subject: p.text(),
    /** AES-256-GCM of the rendered mail; null once sent (it holds a live code). */
    body: p.type("blob").nullable(),
    keyId: p.text(),
    status: p.enum(mailStatuses),
    sendCount: p.integer().default(0),
    lastError: p.text().nullable(),
    nextAttemptAt: p.datetime(),
    /** A courier owns the message until then; another may take it over after. */
    claimedUntil: p.datetime().nullable(),
    /** 'smtp' (the courier's), 'mail_api' or 'sms' (the delivery API's). */
    channel: p.text().default("smtp"),
    /** The delivery API's claim that holds the message: only it acks or fails it. */
    leaseToken: p.uuid().nullable(),
    createdAt: p.datetime(),
    updatedAt: p.datetime(),
  },
  indexes: [
    // What the courier and the delivery API claim from: queued messages of their
    // channels only, the oldest due first (across organizations, to find whose
    // message is due: the courier's, the API's), and an organization's.
    {
      name: "courier_message_queued_idx",
      expression: "create index courier_message_queued_idx on courier_message (next_attempt_at) where status = 'queued' and channel = 'smtp'",
    },
    {
      name: "courier_message_queued_api_idx",
      expression: "create index courier_message_queued_api_idx on courier_message (next_attempt_at) where status = 'queued' and channel <> 'smtp'",
    },
    {
      name: "courier_message_queued_org_idx",
      expression: "create index courier_message_queued_org_idx on courier_message (org_id, channel, next_attempt_at) where status = 'queued'",
    },
    {
      name: "courier_message_org_created_idx",
      expression: "create index courier_message_org_created_idx on courier_message (org_id, created_at desc, id desc)",
    },
    {
      name: "courier_message_abandoned_idx",
      expression: "create index courier_message_abandoned_idx on courier_message (org_id, created_at desc, id desc) where status = 'abandoned'",
    },
    {
      // Retention's, by age (20261207-retention-order.ts).
      name: "courier_message_finished_idx",
      expression: "create index courier_message_finished_idx on courier_message (created_at) where status in ('sent', 'abandoned') and created_at < 'infinity'",
    },
  ],
});

/** Admin bearer tokens, global rather than per organization. */
export const AdminTokenEntity = defineEntity({
  name: "AdminToken",
  tableName: "admin_token",
  properties: {
    id: p.text().primary(),
    /** SHA-256 of the token's secret part. */
    secretHash: p.type("blob"),
    name: p.text(),
    /** What it may call: "admin" (everything) or "delivery" (DeliveryService only). */
    scope: p.text().default("admin"),
    createdAt: p.datetime(),
    revokedAt: p.datetime().nullable(),
  },
});

/** Who holds the turn at a periodic job, and until when (store/job-turns.ts). */
export const JobTurnEntity = defineEntity({
  name: "JobTurn",
  tableName: "job_turn",
  properties: {
    name: p.text().primary(),
    holder: p.text(),
    until: p.datetime(),
  },
});

/** Fixed-window rate-limit counters; the key names what is limited. */
export const RateLimitEntity = defineEntity({
  name: "RateLimit",
  tableName: "rate_limit",
  properties: {
    orgId: p.text().primary(),
    key: p.text().primary(),
    windowStart: p.datetime().primary(),
    hits: p.integer(),
    expiresAt: p.datetime().index("rate_limit_expires_idx"),
  },
});

/**
 * An organization's own mail template for one kind and locale, overriding the
 * built-in one (checked when saved: rules/mail/templates.ts). Read per
 * organization into each server's cache (rules/mail/org-templates.ts).
 */
export const MailTemplateEntity = defineEntity({
  name: "MailTemplate",
  tableName: "mail_template",
  properties: {
    orgId: p.text().primary(),
    /** login, registration, recovery, already_registered, unknown_recovery. */
    kind: p.text().primary(),
    /** Canonical BCP 47 tag ("de", "pt-BR"). */
    locale: p.text().primary(),
    subject: p.text(),
    text: p.text(),
    html: p.text(),
    updatedAt: p.datetime(),
  },
});



/**
 * The event trail: what was done to codes, mails, identities and organizations,
 * written in the transaction of the change (store/events.ts). No code, token or
 * address: ids, a type, a purpose, the admin token id and request id.
 */
export const EventEntity = defineEntity({
  name: "Event",
  tableName: "event",
  properties: {
    orgId: p.text().primary(),
    id: p.bigint().primary().autoincrement(),
    /** The writing transaction's id (xid8): events are followed in (tx, id) order. */
    tx: p.bigint().defaultRaw("((pg_current_xact_id())::text)::bigint"),
    type: p.text(),
    purpose: p.text().nullable(),
    identityId: p.uuid().nullable(),
    codeId: p.uuid().nullable(),
    mailId: p.uuid().nullable(),
    /** The admin token id of an admin action. */
    actor: p.text().nullable(),
    requestId: p.text().nullable(),
    details: p.json<Record<string, string>>().nullable(),
    occurredAt: p.datetime(),
  },
  indexes: [
    { name: "event_org_position_idx", expression: "create index event_org_position_idx on event (org_id, tx, id)" },
    { name: "event_position_idx", expression: "create index event_position_idx on event (tx, id)" },
    // Retention's, by age (20261207-retention-order.ts).
    { name: "event_occurred_idx", expression: "create index event_occurred_idx on event (occurred_at) where occurred_at < 'infinity'" },
  ],
});
export const entities = [OrganizationEntity, IdentityEntity, CodeEntity, CourierMessageEntity, AdminTokenEntity, JobTurnEntity, RateLimitEntity, MailTemplateEntity, EventEntity];
