// Identities: created pending (with their registration code, in the caller's
// transaction), read, listed and switched on or off by the admin API.
import type { Audit } from "../domain/events.ts";
import type { Identity, IdentityState } from "../domain/identity.ts";
import { normalizeUsername } from "../domain/identity.ts";
import { IdentityEntity } from "./entities.ts";
import type { Orm } from "./orm.ts";
import type { Cursor } from "./paging.ts";
import { isUniqueViolation, type Row, type Sql } from "./sql.ts";

const identityOf = (row: { id: string; orgId: string; username: string; state: IdentityState; createdAt: Date; registeredAt?: Date | null; phoneNumber?: string | null }): Identity => ({
  id: row.id,
  orgId: row.orgId,
  username: row.username,
  state: row.state,
  createdAt: new Date(row.createdAt),
  registeredAt: row.registeredAt ? new Date(row.registeredAt) : null,
  phoneNumber: row.phoneNumber ?? null,
});

/** An identity as a statement's row names it (identity's own columns). */
export const identityOfRow = (row: Row): Identity =>
  identityOf({ id: row.id, orgId: row.org_id, username: row.username, state: row.state, createdAt: row.created_at, registeredAt: row.registered_at, phoneNumber: row.phone_number });

/** Inserts a pending identity; false when the username is taken in the organization. */
export async function insertPendingIdentity(sql: Sql, identity: Identity): Promise<boolean> {
  try {
    await sql.query(
      `insert into identity (org_id, id, username, username_normalized, state, created_at, phone_number) values ($1, $2, $3, $4, 'pending', $5, $6)`,
      [identity.orgId, identity.id, identity.username, normalizeUsername(identity.username), identity.createdAt, identity.phoneNumber],
    );
    return true;
  } catch (err) {
    if (isUniqueViolation(err)) return false;
    throw err;
  }
}

export async function getIdentity(orm: Orm, id: string): Promise<Identity | undefined> {
  const row = await orm.em.fork().findOne(IdentityEntity, { id });
  return row ? identityOf(row) : undefined;
}

const IDENTITY_COLUMNS = "org_id, id, username, state, created_at, registered_at, phone_number";

/**
 * A page of an organization's identities in creation order, after `cursor`; one
 * more than `size` tells that another page follows. The cursor is a row
 * comparison, which the index in that order (identity_org_created_idx) starts
 * its scan at: a page reads its own rows, however deep into the organization.
 * "created_at > '-infinity'", true of every row, is the predicate of that partial
 * index: only a statement that states it may use it.
 */
export async function listIdentities(sql: Sql, orgId: string, cursor: Cursor | undefined, size: number): Promise<Identity[]> {
  const rows = cursor
    ? await sql.query(
        `select ${IDENTITY_COLUMNS} from identity where org_id = $1 and created_at > '-infinity' and (created_at, id) > ($2, $3::uuid) order by created_at, id limit $4`,
        [orgId, cursor.createdAt, cursor.id, size + 1],
      )
    : await sql.query(`select ${IDENTITY_COLUMNS} from identity where org_id = $1 and created_at > '-infinity' order by created_at, id limit $2`, [orgId, size + 1]);
  return rows.map(identityOfRow);
}

/**
 * Sets (null: removes) an identity's phone number and records that in the event
 * trail (whether one is set, never the number), in one statement. Answers the
 * identity, or undefined when there is none.
 */
export async function setIdentityPhoneNumber(sql: Sql, orgId: string, id: string, phoneNumber: string | null, now: Date, audit: Audit = {}): Promise<Identity | undefined> {
  const [row] = await sql.query(
    `with changed as (
       update identity set phone_number = $3 where org_id = $1 and id = $2::uuid
       returning org_id, id, username, state, created_at, registered_at, phone_number
     ), logged as (
       insert into event (org_id, type, identity_id, actor, request_id, details, occurred_at)
       select org_id, 'identity.phone_number_set', id, nullif($5::text, ''), nullif($6::text, ''),
         jsonb_build_object('set', (phone_number is not null)::text), $4
       from changed
     )
     select org_id, id, username, state, created_at, registered_at, phone_number from changed`,
    [orgId, id, phoneNumber, now, audit.actor ?? "", audit.requestId ?? ""],
  );
  return row ? identityOfRow(row) : undefined;
}

/**
 * Sets an identity's state, in one statement with what goes with it: a disabled
 * identity's live codes die, and the change is recorded in the event trail
 * (from, to, codes invalidated). Answers the identity, or undefined when there is none.
 * Named by its organization too: every statement that writes names it.
 */
export async function setIdentityState(sql: Sql, orgId: string, id: string, state: IdentityState, now: Date, audit: Audit = {}): Promise<Identity | undefined> {
  const [row] = await sql.query(
    `with changed as (
       update identity i set state = $2 from identity old
       where i.org_id = $6 and i.id = $1::uuid and old.org_id = $6 and old.id = i.id
       returning i.org_id, i.id, i.username, i.state, i.created_at, i.registered_at, i.phone_number, old.state as previous
     ), killed as (
       update code c set dead_at = $3 from changed
       where $2 = 'disabled' and c.org_id = changed.org_id and c.identity_id = changed.id and c.dead_at is null
       returning c.id
     ), logged as (
       insert into event (org_id, type, identity_id, actor, request_id, details, occurred_at)
       select org_id, 'identity.state_changed', id, nullif($4::text, ''), nullif($5::text, ''),
         jsonb_build_object('from', previous, 'to', state, 'invalidated', (select count(*) from killed)::text), $3
       from changed
     )
     select org_id, id, username, state, created_at, registered_at, phone_number from changed`,
    [id, state, now, audit.actor ?? "", audit.requestId ?? "", orgId],
  );
  return row ? identityOfRow(row) : undefined;
}
