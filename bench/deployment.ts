// What a bench's server brings on a real database, as a deployment does (nothing is
// generated there): fresh keys, PUBLIC_URL, and an admin token.
import { generateKeyPairSync, randomBytes } from "node:crypto";

export const benchAdminToken = (): string => randomBytes(24).toString("base64url");

export function benchDeployment(): Record<string, string> {
  return {
    PUBLIC_URL: "http://codegate.bench",
    CODE_HMAC_KEYS: `b1:${randomBytes(32).toString("base64")}`,
    MAIL_ENCRYPTION_KEYS: `b1:${randomBytes(32).toString("base64")}`,
    TOKEN_SIGNING_KEY: Buffer.from(generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" })).toString("base64"),
  };
}
