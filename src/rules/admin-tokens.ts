// Admin bearer tokens. A token is `cga_<id>_<secret>`: the id finds the row, the
// secret is kept only as its SHA-256 and compared in constant time. Tokens can be
// revoked; ADMIN_TOKEN from the environment is accepted as well, for bootstrap.
// A token's scope says what it may call: a delivery worker's token reads the codes it
// delivers, and nothing else, so that a stolen one cannot mint a recovery code.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { countLiveAdminTokens, insertAdminToken, liveAdminToken, revokeAdminToken as revoke } from "../store/admin-tokens.ts";
import type { Orm } from "../store/orm.ts";
import { randomString } from "./codes/random.ts";

const TOKEN_RE = /^cga_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const sha256 = (s: string) => createHash("sha256").update(s).digest();

/** What a token may call: every admin service (`admin`), or the delivery API alone (`delivery`). */
export const ADMIN_SCOPES = ["admin", "delivery"] as const;
export type AdminScope = (typeof ADMIN_SCOPES)[number];
const isScope = (s: string): s is AdminScope => (ADMIN_SCOPES as readonly string[]).includes(s);

export interface AdminPrincipal {
  /** Safe to log. */
  tokenId: string;
  scope: AdminScope;
}

/** A new token, shown once: only its hash is kept. */
export async function createAdminToken(orm: Orm, name: string, now: Date, scope: AdminScope = "admin"): Promise<{ id: string; token: string }> {
  const id = randomString("abcdefghijklmnopqrstuvwxyz0123456789", 12);
  const secret = randomBytes(32).toString("base64url");
  await insertAdminToken(orm, { id, secretHash: sha256(secret), name, scope, createdAt: now });
  return { id, token: `cga_${id}_${secret}` };
}

export const revokeAdminToken = (orm: Orm, id: string, now: Date): Promise<boolean> => revoke(orm, id, now);

/** Live tokens that may call everything (a delivery token is no way in for an operator). */
export const countAdminTokens = (orm: Orm): Promise<number> => countLiveAdminTokens(orm, "admin");

export class AdminTokenVerifier {
  private readonly bootstrapHash: Buffer | undefined;
  private readonly orm: Orm;
  constructor(orm: Orm, bootstrapToken: string | undefined) {
    this.orm = orm;
    this.bootstrapHash = bootstrapToken ? sha256(bootstrapToken) : undefined;
  }

  /** The principal of a valid `Authorization` header, else undefined. */
  async verify(authorization: string | null): Promise<AdminPrincipal | undefined> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
    if (!m) return undefined;
    const presented = m[1];
    if (this.bootstrapHash && timingSafeEqual(sha256(presented), this.bootstrapHash)) return { tokenId: "env", scope: "admin" };
    const parts = TOKEN_RE.exec(presented);
    if (!parts) return undefined;
    const stored = await liveAdminToken(this.orm, parts[1]);
    // Hash even when the id is unknown, so both answers take the same time.
    const presentedHash = sha256(parts[2]);
    if (!timingSafeEqual(presentedHash, stored?.secretHash ?? Buffer.alloc(32)) || !stored) return undefined;
    // A scope this version does not know (written by a newer one) grants nothing.
    return isScope(stored.scope) ? { tokenId: parts[1], scope: stored.scope } : undefined;
  }
}
