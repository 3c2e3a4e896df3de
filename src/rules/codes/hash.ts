import { createHmac, timingSafeEqual, type KeyObject } from "node:crypto";
import type { KeyRing } from "../../config/secrets.ts";

/**
 * HMAC-SHA-256 of a code under a server key. The row id is part of the input,
 * so that two rows holding the same code do not hold the same hash.
 */
export function codeHash(key: KeyObject, rowId: string, code: string): Buffer {
  return createHmac("sha256", key).update(rowId).update("\0").update(code).digest();
}

/** Whether `code` is the one hashed in a row, under the key the row names. */
export function codeMatches(keys: KeyRing, keyId: string, rowId: string, code: string, stored: Buffer): boolean {
  const key = keys.byId.get(keyId);
  // A retired key: hash anyway with the current one so the answer takes as long.
  const computed = codeHash(key ?? keys.current.key, rowId, code);
  return timingSafeEqual(computed, stored) && key !== undefined;
}
