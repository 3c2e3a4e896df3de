// Identities: created pending (with their registration code, in the caller's
// transaction), read, listed and switched on or off by the admin API.
import type { Identity, IdentityState } from "../domain/identity.ts";
import { normalizeUsername } from "../domain/identity.ts";
import { IdentityEntity } from "./entities.ts";
import type { Orm } from "./orm.ts";
import { afterCursor, type Cursor } from "./paging.ts";
import { isUniqueViolation, type Sql } from "./sql.ts";

const identityOf = (row: { id: string; orgId: string; username: string; state: IdentityState; createdAt: Date; registeredAt?: Date | null; phoneNumber?: string | null }): Identity => ({
  id: row.id,
  orgId: row.orgId,
  username: row.username,
  state: row.state,
  createdAt: new Date(row.createdAt),
  registeredAt: row.registeredAt ? new Date(row.registeredAt) : null,
  phoneNumber: row.phoneNumber ?? null,
});

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

/** A page of an organization's identities in creation order, after `cursor`; one more than `size` tells that another page follows. */
export async function listIdentities(orm: Orm, orgId: string, cursor: Cursor | undefined, size: number): Promise<Identity[]> {
  const rows = await orm.em.fork().find(IdentityEntity, { orgId, ...afterCursor(cursor) }, { orderBy: { createdAt: "asc", id: "asc" }, limit: size + 1 });
  return rows.map(identityOf);
}

/** Sets (null: removes) an identity's phone number; answers it, or undefined when there is none. */
export async function setIdentityPhoneNumber(orm: Orm, id: string, phoneNumber: string | null): Promise<Identity | undefined> {
  const em = orm.em.fork();
  const row = await em.findOne(IdentityEntity, { id });
  if (!row) return undefined;
  row.phoneNumber = phoneNumber;
  await em.flush();
  return identityOf(row);
}

/** Sets an identity's state; answers it, or undefined when there is none. */
export async function setIdentityState(orm: Orm, id: string, state: IdentityState): Promise<Identity | undefined> {
  const em = orm.em.fork();
  const row = await em.findOne(IdentityEntity, { id });
  if (!row) return undefined;
  row.state = state;
  await em.flush();
  return identityOf(row);
}
