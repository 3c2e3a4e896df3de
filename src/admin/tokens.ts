// Admin bearer tokens. A token is `cga_<id>_<secret>`: the id finds the row, the
// secret is kept only as its SHA-256 and compared in constant time. Tokens can be
// revoked; ADMIN_TOKEN from the environment is accepted as well, for bootstrap.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { EntityManager } from "@mikro-orm/core";
import { AdminTokenEntity } from "../storage/entities.ts";
import { randomString } from "../codes/random.ts";

const TOKEN_RE = /^cga_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const sha256 = (s: string) => createHash("sha256").update(s).digest();

export interface AdminPrincipal {
  /** Safe to log. */
  tokenId: string;
}

export async function createAdminToken(em: EntityManager, name: string, now: Date): Promise<{ id: string; token: string }> {
  const id = randomString("abcdefghijklmnopqrstuvwxyz0123456789", 12);
  const secret = randomBytes(32).toString("base64url");
  em.create(AdminTokenEntity, { id, secretHash: sha256(secret), name, createdAt: now, revokedAt: null });
  await em.flush();
  return { id, token: `cga_${id}_${secret}` };
}

export async function revokeAdminToken(em: EntityManager, id: string, now: Date): Promise<boolean> {
  const n = await em.nativeUpdate(AdminTokenEntity, { id, revokedAt: null }, { revokedAt: now });
  return n > 0;
}

export async function countAdminTokens(em: EntityManager): Promise<number> {
  return em.count(AdminTokenEntity, { revokedAt: null });
}

export class AdminTokenVerifier {
  private readonly bootstrapHash: Buffer | undefined;
  private readonly em: () => EntityManager;
  constructor(em: () => EntityManager, bootstrapToken: string | undefined) {
    this.em = em;
    this.bootstrapHash = bootstrapToken ? sha256(bootstrapToken) : undefined;
  }

  /** The principal of a valid `Authorization` header, else undefined. */
  async verify(authorization: string | null): Promise<AdminPrincipal | undefined> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!m) return undefined;
    const presented = m[1];
    if (this.bootstrapHash && timingSafeEqual(sha256(presented), this.bootstrapHash)) return { tokenId: "env" };
    const parts = TOKEN_RE.exec(presented);
    if (!parts) return undefined;
    const row = await this.em().findOne(AdminTokenEntity, { id: parts[1], revokedAt: null });
    // Hash even when the id is unknown, so both answers take the same time.
    const presentedHash = sha256(parts[2]);
    const storedHash = row?.secretHash ?? Buffer.alloc(32);
    return timingSafeEqual(presentedHash, storedHash) && row ? { tokenId: row.id } : undefined;
  }
}
