// A code is kept as an HMAC-SHA-256 under a server key, never as itself. What the
// hash is taken over besides the code:
// - a code verified by username (every public flow): the organization, the
//   normalized username, the purpose and the binding, which a verification
//   knows before it finds the row. It hashes the guess under every key a row may
//   name, and the database compares, counts and consumes in one statement.
// - an administrator's recovery code (verified by its flow id alone): its row id,
//   the hash compared here once the attempt has found the row.
// Either way two live codes that happen to be equal never share a hash.
import { createHmac, timingSafeEqual, type KeyObject } from "node:crypto";
import type { KeyRing } from "../../config/secrets.ts";

/** What a verification by username knows of a code before it finds it. */
export interface CodeOwner {
  orgId: string;
  usernameNormalized: string;
  purpose: string;
  /** The binding as stored ('' for none). */
  binding: string;
}

export function ownerCodeHash(key: KeyObject, owner: CodeOwner, code: string): Buffer {
  return createHmac("sha256", key).update(`${owner.orgId}\0${owner.usernameNormalized}\0${owner.purpose}\0${owner.binding}\0`).update(code).digest();
}

/** A guess hashed under every key of the ring, for the database to compare with the row's. */
export function ownerCodeHashes(keys: KeyRing, owner: CodeOwner, code: string): { keyIds: string[]; hashes: Buffer[] } {
  const keyIds = [...keys.byId.keys()];
  return { keyIds, hashes: keyIds.map((id) => ownerCodeHash(keys.byId.get(id)!, owner, code)) };
}

export function rowCodeHash(key: KeyObject, rowId: string, code: string): Buffer {
  return createHmac("sha256", key).update(rowId).update("\0").update(code).digest();
}

/** Whether `code` is the one hashed in a row over its id, under the key the row names. */
export function rowCodeMatches(keys: KeyRing, keyId: string, rowId: string, code: string, stored: Buffer): boolean {
  const key = keys.byId.get(keyId);
  // A retired key: hash anyway with the current one so the answer takes as long.
  const computed = rowCodeHash(key ?? keys.current.key, rowId, code);
  return timingSafeEqual(computed, stored) && key !== undefined;
}
