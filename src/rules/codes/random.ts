import { randomInt } from "node:crypto";

/**
 * A string of `length` characters drawn uniformly from `alphabet` with the
 * CSPRNG. crypto.randomInt rejects out-of-range draws, so there is no modulo bias.
 */
export function randomString(alphabet: string, length: number): string {
  let out = "";
  for (let i = 0; i < length; i++) out += alphabet[randomInt(alphabet.length)];
  return out;
}

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/** `or-xxxxx-xxxxx-xxxxxxxxxxxxxxxx` */
export const newOrgId = () => `or-${randomString(ID_ALPHABET, 5)}-${randomString(ID_ALPHABET, 5)}-${randomString(ID_ALPHABET, 16)}`;

/** `acct-xxxxx-xxxxx-xxxxxxxxxxxxxxxx` */
export const newTenantId = () => `acct-${randomString(ID_ALPHABET, 5)}-${randomString(ID_ALPHABET, 5)}-${randomString(ID_ALPHABET, 16)}`;
