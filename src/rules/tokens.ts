// Proof tokens: what a successful verification answers with. A short-lived JWT
// signed with the server's Ed25519 key, verifiable offline by any service through
// the JWKS published at /.well-known/jwks.json.
import { createPrivateKey, createPublicKey, randomUUID, sign, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, type JWK } from "jose";
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
  /** The protected header, encoded once: it names the signing key. */
  private readonly header: string;

  private constructor(privateKey: KeyObject, keys: JWK[], config: Config["token"]) {
    this.privateKey = privateKey;
    this.kid = keys[0].kid!;
    this.keys = keys;
    this.config = config;
    this.header = Buffer.from(JSON.stringify({ alg: "EdDSA", kid: this.kid, typ: "JWT" })).toString("base64url");
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

  /**
   * A compact JWS (RFC 7515) signed with Ed25519 (RFC 8037), made here rather than by
   * jose's SignJWT: its WebCrypto round trip cost 89 µs of CPU a token, node:crypto's
   * one-shot sign 34 µs (a verification's whole budget is a few hundred).
   */
  async issue(subject: { id: string; orgId: string }, purpose: Purpose, now: Date): Promise<ProofToken> {
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + Math.floor(this.config.ttlMs / 1000);
    const claims = { org: subject.orgId, purpose, amr: ["otp"], sub: subject.id, iss: this.config.issuer, aud: this.config.audience, iat, exp, jti: randomUUID() };
    const input = `${this.header}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}`;
    const token = `${input}.${sign(null, Buffer.from(input), this.privateKey).toString("base64url")}`;
    return { token, expiresAt: new Date(exp * 1000) };
  }

  /** The public keys, the signing key first, as served at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: this.keys };
  }
}
