// The server's secrets: HMAC keys for codes, AES keys for queued mail bodies, and
// the Ed25519 key that signs proof tokens. In production they come from the
// environment; otherwise any that is missing is generated once and kept in
// DATA_DIR/secrets.json, with a warning, so that restarts keep working codes.
import { createSecretKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "./env.ts";
import type { Config } from "./config.ts";

export interface KeyRing {
  /** New material is written under this key. */
  current: { id: string; key: KeyObject };
  /** Every key that may still be needed to read old material, current included. */
  byId: ReadonlyMap<string, KeyObject>;
}

export interface Secrets {
  codeKeys: KeyRing;
  mailKeys: KeyRing;
  /** PKCS#8 PEM of the Ed25519 signing key. */
  signingKeyPem: string;
  /** PEMs of keys published beside it during a rotation (TOKEN_VERIFICATION_KEYS). */
  verificationKeyPems: string[];
  /** Whether any secret was generated rather than configured. */
  generated: string[];
}

interface StoredSecrets {
  codeKeys?: string;
  mailKeys?: string;
  signingKey?: string;
}

/**
 * Parses `id:base64key,id2:base64key`; the first entry is the current key.
 * Keys are held as KeyObjects: node:crypto takes those without converting
 * (and checking) a buffer on every call.
 */
export function parseKeyRing(name: string, text: string, size: { min: number; max: number }): KeyRing {
  const entries = text.split(",").map((part) => part.trim()).filter(Boolean);
  const byId = new Map<string, KeyObject>();
  const expected = size.min === size.max ? `exactly ${size.min}` : `at least ${size.min}`;
  for (const entry of entries) {
    const m = /^([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/=_-]+)$/.exec(entry);
    const key = m ? Buffer.from(m[2], "base64") : undefined;
    if (!m || !key || key.length < size.min || key.length > size.max) {
      throw new ConfigError([`${name}: expected comma-separated id:base64key entries, each key ${expected} bytes`]);
    }
    if (byId.has(m[1])) throw new ConfigError([`${name}: key id ${m[1]} appears twice`]);
    byId.set(m[1], createSecretKey(key));
  }
  if (byId.size === 0) throw new ConfigError([`${name}: expected at least one id:base64key entry`]);
  const [id, key] = byId.entries().next().value!;
  return { current: { id, key }, byId };
}

const newKeyRingText = (prefix: string) => `${prefix}${Date.now().toString(36)}:${randomBytes(32).toString("base64")}`;

export function loadSecrets(config: Config, warn: (msg: string) => void): Secrets {
  const env = config.secretsEnv;
  const file = join(config.dataDir, "secrets.json");
  let stored: StoredSecrets = {};
  const needsDefaults = !env.codeKeys || !env.mailKeys || !env.signingKey;
  if (needsDefaults && config.production) {
    throw new ConfigError(["CODE_HMAC_KEYS, MAIL_ENCRYPTION_KEYS and TOKEN_SIGNING_KEY must be configured in production (NODE_ENV=production, or DATABASE_URL set)"]);
  }
  const generated: string[] = [];
  if (needsDefaults) {
    if (existsSync(file)) stored = JSON.parse(readFileSync(file, "utf8")) as StoredSecrets;
    if (!env.codeKeys && !stored.codeKeys) (stored.codeKeys = newKeyRingText("c")), generated.push("CODE_HMAC_KEYS");
    if (!env.mailKeys && !stored.mailKeys) (stored.mailKeys = newKeyRingText("m")), generated.push("MAIL_ENCRYPTION_KEYS");
    if (!env.signingKey && !stored.signingKey) {
      stored.signingKey = generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" }).toString();
      generated.push("TOKEN_SIGNING_KEY");
    }
    if (generated.length) {
      mkdirSync(config.dataDir, { recursive: true });
      writeFileSync(file, JSON.stringify(stored, null, 2), { mode: 0o600 });
      chmodSync(file, 0o600);
    }
    warn(
      `using secrets kept in ${file} (${generated.length ? `generated now: ${generated.join(", ")}` : "generated earlier"}); ` +
        "set CODE_HMAC_KEYS, MAIL_ENCRYPTION_KEYS and TOKEN_SIGNING_KEY for production",
    );
  }
  const signingKeyPem = decodePem(env.signingKey ?? stored.signingKey!);
  return {
    codeKeys: parseKeyRing("CODE_HMAC_KEYS", env.codeKeys ?? stored.codeKeys!, { min: 32, max: 1024 }),
    // AES-256-GCM takes 32-byte keys.
    mailKeys: parseKeyRing("MAIL_ENCRYPTION_KEYS", env.mailKeys ?? stored.mailKeys!, { min: 32, max: 32 }),
    signingKeyPem,
    verificationKeyPems: env.verificationKeys ? splitPems("TOKEN_VERIFICATION_KEYS", env.verificationKeys) : [],
    generated,
  };
}

/** Several keys: PEMs one after the other, or base64 of PEMs separated by commas. */
function splitPems(name: string, text: string): string[] {
  const pems = text.includes("-----BEGIN") ? (text.replace(/\\n/g, "\n").match(/-----BEGIN [A-Z ]+-----[\s\S]+?-----END [A-Z ]+-----/g) ?? []) : text.split(",").map((part) => Buffer.from(part.trim(), "base64").toString("utf8"));
  if (pems.length === 0 || pems.some((pem) => !/-----BEGIN (PRIVATE|PUBLIC) KEY-----/.test(pem))) {
    throw new ConfigError([`${name}: expected Ed25519 keys as PEM (private or public), or base64 of PEMs separated by commas`]);
  }
  return pems;
}

/** Accepts a PEM as is, or base64 of a PEM (easier to put in one env line). */
function decodePem(text: string): string {
  if (text.includes("-----BEGIN")) return text.replace(/\\n/g, "\n");
  const decoded = Buffer.from(text, "base64").toString("utf8");
  if (!decoded.includes("-----BEGIN PRIVATE KEY-----")) {
    throw new ConfigError(["TOKEN_SIGNING_KEY: expected an Ed25519 private key as PKCS#8 PEM (or base64 of it)"]);
  }
  return decoded;
}
