// Admin bearer tokens: a row per token, its secret kept as a SHA-256 only.
import { AdminTokenEntity } from "./entities.ts";
import type { Orm } from "./orm.ts";

export async function insertAdminToken(orm: Orm, token: { id: string; secretHash: Buffer; name: string; scope: string; createdAt: Date }): Promise<void> {
  const em = orm.em.fork();
  em.create(AdminTokenEntity, { ...token, revokedAt: null });
  await em.flush();
}

/** Revokes a live token; false when there is none of that id. */
export async function revokeAdminToken(orm: Orm, id: string, now: Date): Promise<boolean> {
  return (await orm.em.fork().nativeUpdate(AdminTokenEntity, { id, revokedAt: null }, { revokedAt: now })) > 0;
}

export function countLiveAdminTokens(orm: Orm, scope: string): Promise<number> {
  return orm.em.fork().count(AdminTokenEntity, { revokedAt: null, scope });
}

/** The secret hash and scope of a live token, or undefined. */
export async function liveAdminToken(orm: Orm, id: string): Promise<{ secretHash: Buffer; scope: string } | undefined> {
  const row = await orm.em.fork().findOne(AdminTokenEntity, { id, revokedAt: null });
  return row ? { secretHash: Buffer.from(row.secretHash), scope: row.scope } : undefined;
}
