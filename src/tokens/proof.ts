// Proof tokens: what a successful verification answers with. A short-lived JWT
// signed with the server's Ed25519 key, verifiable offline by any service through
// the JWKS published at /.well-known/jwks.json.
import { createPrivateKey, createPublicKey, randomUUID, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, SignJWT, type JWK } from "jose";
import type { Config, Purpose } from "../config/config.ts";

export interface ProofToken {
  token: string;
  expiresAt: Date;
}

export class ProofTokens {
  private readonly privateKey: KeyObject;
  private readonly kid: string;
  private readonly jwk: JWK;
  private readonly config: Config["token"];

  private constructor(privateKey: KeyObject, kid: string, jwk: JWK, config: Config["token"]) {
    this.privateKey = privateKey;
    this.kid = kid;
    this.jwk = jwk;
    this.config = config;
  }

  static async create(signingKeyPem: string, config: Config["token"]): Promise<ProofTokens> {
    const privateKey = createPrivateKey(signingKeyPem);
    if (privateKey.asymmetricKeyType !== "ed25519") throw new Error("TOKEN_SIGNING_KEY: expected an Ed25519 key");
    const publicJwk = await exportJWK(createPublicKey(privateKey));
    const kid = await calculateJwkThumbprint(publicJwk);
    return new ProofTokens(privateKey, kid, { ...publicJwk, kid, alg: "EdDSA", use: "sig" }, config);
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

  /** The public keys, as served at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: [this.jwk] };
  }
}
