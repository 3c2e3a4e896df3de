// Queued mail bodies hold live codes, so they are encrypted at rest with
// AES-256-GCM under a key named in the row (keys rotate like the code keys).
// The row id is authenticated data: a body cannot be moved to another row.
import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";
import type { KeyRing } from "../../config/secrets.ts";

const IV_BYTES = 12;
const TAG_BYTES = 16;

// IVs are drawn from the CSPRNG in blocks: one call into OpenSSL per 512 IVs
// rather than one per mail (randomBytes was a visible share of a send's CPU).
// The slice is only read synchronously (cipher and concat copy it) before reuse.
const ivPool = Buffer.alloc(IV_BYTES * 512);
let ivOffset = ivPool.length;
function nextIv(): Buffer {
  if (ivOffset === ivPool.length) {
    randomFillSync(ivPool);
    ivOffset = 0;
  }
  ivOffset += IV_BYTES;
  return ivPool.subarray(ivOffset - IV_BYTES, ivOffset);
}

export function seal(keys: KeyRing, rowId: string, plaintext: string): { keyId: string; sealed: Buffer } {
  const iv = nextIv();
  const cipher = createCipheriv("aes-256-gcm", keys.current.key, iv);
  cipher.setAAD(Buffer.from(rowId));
  const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
  return { keyId: keys.current.id, sealed: Buffer.concat([iv, cipher.getAuthTag(), body]) };
}

export function unseal(keys: KeyRing, keyId: string, rowId: string, sealed: Buffer): string {
  const key = keys.byId.get(keyId);
  if (!key) throw new Error(`mail key ${keyId} is not configured`);
  const decipher = createDecipheriv("aes-256-gcm", key, sealed.subarray(0, IV_BYTES));
  decipher.setAAD(Buffer.from(rowId));
  decipher.setAuthTag(sealed.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  return Buffer.concat([decipher.update(sealed.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString("utf8");
}
