import { describe, expect, it } from "vitest";
import { loadConfig } from "../src/config/config.ts";
import { ConfigError } from "../src/config/env.ts";
import { parseDuration } from "../src/lib/duration.ts";
import { parseKeyRing } from "../src/config/secrets.ts";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("configuration", () => {
  it("has working defaults", () => {
    const c = loadConfig({});
    expect(c.port).toBe(8080);
    expect(c.databaseUrl).toBeUndefined();
    expect(c.codes.login).toMatchObject({ length: 6, alphabet: "0123456789", lifespanMs: 600_000, maxAttempts: 5 });
    expect(c.codes.registration.lifespanMs).toBe(24 * 3_600_000);
    expect(c.codes.recovery.lifespanMs).toBe(3_600_000);
  });

  it("reports every bad value at once, naming the variable and what was expected", () => {
    const p = problems({ PORT: "eighty", LOG_LEVEL: "loud", CODE_LOGIN_LIFESPAN: "forever", DATABASE_URL: "mysql://x", SMTP_URL: "nope" });
    expect(p).toHaveLength(5);
    expect(p.join("\n")).toMatch(/PORT=.*whole number from 0 to 65535/);
    expect(p.join("\n")).toMatch(/LOG_LEVEL=.*one of/);
    expect(p.join("\n")).toMatch(/CODE_LOGIN_LIFESPAN=.*duration/);
    expect(p.join("\n")).toMatch(/DATABASE_URL: expected a URL starting with postgres:/);
    expect(p.join("\n")).toMatch(/SMTP_URL: expected a URL/);
  });

  it("refuses rate limits with one window twice, or a count past PostgreSQL's integers", () => {
    expect(problems({ RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "20/1m,100/60s" }).join("\n")).toMatch(/RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME=.*each window once/);
    expect(problems({ RATE_LIMIT_SEND_PER_ADDRESS: "2147483648/1h" }).join("\n")).toMatch(/RATE_LIMIT_SEND_PER_ADDRESS=.*count from 1 to 2147483647/);
    expect(loadConfig({ RATE_LIMIT_SEND_PER_ADDRESS: "20/1m,100/1h" }).rateLimits.sendPerAddress).toEqual([
      { max: 20, windowMs: 60_000 },
      { max: 100, windowMs: 3_600_000 },
    ]);
  });

  it("never echoes a URL that may hold a password", () => {
    const p = problems({ DATABASE_URL: "mysql://user:hunter2@db/x" });
    expect(p.join("\n")).not.toContain("hunter2");
  });

  it("requires the secrets and the real backends in production", () => {
    const p = problems({ NODE_ENV: "production" });
    for (const name of ["DATABASE_URL", "SMTP_URL", "CODE_HMAC_KEYS", "MAIL_ENCRYPTION_KEYS", "TOKEN_SIGNING_KEY"]) {
      expect(p.join("\n")).toContain(name);
    }
  });

  it("parses Go-style durations", () => {
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("1500ms")).toBe(1500);
    expect(parseDuration("1d")).toBeUndefined();
    expect(parseDuration("")).toBeUndefined();
  });
});

describe("key rings", () => {
  const b64 = (n: number) => Buffer.alloc(n, 7).toString("base64");
  it("take id:key pairs, the first being the current key", () => {
    const ring = parseKeyRing("CODE_HMAC_KEYS", `new:${b64(32)},old:${b64(48)}`, { min: 32, max: 1024 });
    expect(ring.current.id).toBe("new");
    expect([...ring.byId.keys()]).toEqual(["new", "old"]);
    expect(ring.byId.get("old")!.symmetricKeySize).toBe(48);
  });

  it("refuse short keys, wrong AES key sizes and repeated ids, naming the variable", () => {
    expect(() => parseKeyRing("CODE_HMAC_KEYS", `k:${b64(16)}`, { min: 32, max: 1024 })).toThrow(/CODE_HMAC_KEYS: .*at least 32 bytes/);
    expect(() => parseKeyRing("MAIL_ENCRYPTION_KEYS", `m:${b64(33)}`, { min: 32, max: 32 })).toThrow(/MAIL_ENCRYPTION_KEYS: .*exactly 32 bytes/);
    expect(() => parseKeyRing("CODE_HMAC_KEYS", `a:${b64(32)},a:${b64(32)}`, { min: 32, max: 1024 })).toThrow(/appears twice/);
    expect(() => parseKeyRing("CODE_HMAC_KEYS", "not a key", { min: 32, max: 1024 })).toThrow(/id:base64key/);
  });
});
