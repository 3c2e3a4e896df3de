// Proof tokens: what a successful verification answers with. A short-lived JWT
// signed with the server's Ed25519 key, verifiable offline by any service through
// the JWKS published at /.well-known/jwks.json.
import { createPrivateKey, createPublicKey, randomUUID, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, SignJWT, type JWK } from "jose";
import type { Config } from "../config/config.ts";
import type { Purpose } from "../domain/purpose.ts";

export interface ProofToken {
  token: string;
  expiresAt: Date;
}

/** A public key as the JWKS publishes it, named by its thumbprint. */
async function publishedKey(key: KeyObject): Promise<JWK> {
  const publicJwk = await exportJWK(createPublicKey(key));
  return { ...publicJwk, kid: await calculateJwkThumbprint(publicJwk), alg: "EdDSA", use: "sig" };
}

/**
 * Signs with one key and publishes it with the keys of a rotation
 * (TOKEN_VERIFICATION_KEYS): tokens signed with a previous key keep verifying
 * against the JWKS until it is taken out (README, "Rotating the signing key").
 */
export class ProofTokens {
  private readonly privateKey: KeyObject;
  private readonly kid: string;
  private readonly keys: JWK[];
  private readonly config: Config["token"];

  private constructor(privateKey: KeyObject, keys: JWK[], config: Config["token"]) {
    this.privateKey = privateKey;
    this.kid = keys[0].kid!;
    this.keys = keys;
    this.config = config;
  }

  /** `otherPems`: private or public keys published beside the signing key (the next one, or the previous one). */
  static async create(signingKeyPem: string, config: Config["token"], otherPems: readonly string[] = []): Promise<ProofTokens> {
    const privateKey = createPrivateKey(signingKeyPem);
    if (privateKey.asymmetricKeyType !== "ed25519") throw new Error("TOKEN_SIGNING_KEY: expected an Ed25519 key");
    const others = otherPems.map((pem) => (pem.includes("PRIVATE KEY") ? createPrivateKey(pem) : createPublicKey(pem)));
    if (others.some((k) => k.asymmetricKeyType !== "ed25519")) throw new Error("TOKEN_VERIFICATION_KEYS: expected Ed25519 keys");
    const keys = await Promise.all([privateKey, ...others].map(publishedKey));
    const unique = keys.filter((k, i) => keys.findIndex((o) => o.kid === k.kid) === i);
    return new ProofTokens(privateKey, unique, config);
  }

  async issue(subject: { id: string; orgId: string }, purpose: Purpose, now: Date): Promise<ProofToken> {
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + Math.floor(this.config.ttlMs / 1000);
    const token = await new SignJWT({ org: subject.orgId, purpose, amr: ["otp"] })
      .setProtectedHeader({ alg: "EdDSA", kid: this.kid, typ: "JWT" })
      .setSubject(subject.id)
      .setIssuer(this.config.issuer)
      .setAudience(this.config.audience)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(this.privateKey);
    return { token, expiresAt: new Date(exp * 1000) };
  }

  /** The public keys, the signing key first, as served at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: this.keys };
  }
}
