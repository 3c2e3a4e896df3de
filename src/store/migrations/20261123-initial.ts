import { Migration } from "@mikro-orm/migrations";

export class InitialSchema extends Migration {
  override up(): void {
    this.addSql(`
      create table organization (
        id text primary key,
        tenant_id text not null,
        name text not null,
        settings jsonb not null,
        created_at timestamptz not null
      )`);
    this.addSql(`create index organization_tenant_id_idx on organization (tenant_id)`);

    this.addSql(`
      create table identity (
        org_id text not null,
        id uuid not null,
        username text not null,
        username_normalized text not null,
        state text not null check (state in ('pending', 'active', 'disabled')),
        created_at timestamptz not null,
        registered_at timestamptz null,
        primary key (org_id, id)
      )`);
    this.addSql(`alter table identity add constraint identity_org_username_key unique (org_id, username_normalized)`);
    // GetIdentity and the admin calls find an identity by its id alone.
    this.addSql(`create index identity_id_idx on identity (id)`);

    this.addSql(`
      create table code (
        org_id text not null,
        id uuid not null,
        identity_id uuid not null,
        purpose text not null,
        code_hash bytea not null,
        key_id text not null,
        created_at timestamptz not null,
        expires_at timestamptz not null,
        attempts int not null default 0,
        max_attempts int not null,
        consumed_at timestamptz null,
        dead_at timestamptz null,
        primary key (org_id, id)
      )`);
    // The rule "at most one live code per identity and purpose", kept by the
    // database. Partial, so that it holds live rows only: history never slows it.
    this.addSql(`create unique index code_live_key on code (org_id, identity_id, purpose) where dead_at is null`);
    // An admin's recovery link names its code by id alone (the flow id).
    this.addSql(`create index code_recovery_flow_idx on code (id) where purpose = 'recovery' and dead_at is null`);

    this.addSql(`
      create table courier_message (
        org_id text not null,
        id uuid not null,
        purpose text not null,
        recipient text not null,
        subject text not null,
        body bytea null,
        key_id text not null,
        status text not null check (status in ('queued', 'sent', 'abandoned')),
        send_count int not null default 0,
        last_error text null,
        next_attempt_at timestamptz not null,
        claimed_until timestamptz null,
        created_at timestamptz not null,
        updated_at timestamptz not null,
        primary key (org_id, id)
      )`);
    // What the courier claims from: queued messages only.
    this.addSql(`create index courier_message_queued_idx on courier_message (next_attempt_at) where status = 'queued'`);
    this.addSql(`create index courier_message_org_created_idx on courier_message (org_id, created_at desc, id desc)`);

    this.addSql(`
      create table admin_token (
        id text primary key,
        secret_hash bytea not null,
        name text not null,
        created_at timestamptz not null,
        revoked_at timestamptz null
      )`);
  }
}
