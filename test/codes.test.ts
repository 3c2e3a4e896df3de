import { afterAll, describe, expect, it, vi } from "vitest";
import { createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { randomString } from "../src/rules/codes/random.ts";
import { rowCodeHash } from "../src/rules/codes/hash.ts";
import { parseKeyRing } from "../src/config/secrets.ts";
import { seal, unseal } from "../src/rules/mail/seal.ts";
import { decodeMail } from "../src/rules/mail/payload.ts";
import { simpleParser } from "mailparser";
import { startTestServer, freshDatabase, type TestServer } from "./support/server.ts";
import { postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";

const servers: TestServer[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
});
const keyRing = (...ids: string[]) => ids.map((id) => `${id}:${randomBytes(32).toString("base64")}`);

describe("code generation", () => {
  it("draws every character uniformly from the alphabet (chi-square, 100k draws)", () => {
    const alphabet = "0123456789";
    const counts = new Map<string, number>();
    const draws = 100_000;
    for (const ch of randomString(alphabet, draws)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    expect([...counts.keys()].sort().join("")).toBe(alphabet);
    const expected = draws / alphabet.length;
    const chi2 = [...counts.values()].reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0);
    // 9 degrees of freedom: P(chi2 > 40) is about 7e-6 for a uniform source.
    // A modulo-biased draw over a byte (256 % 10 = 6) gives chi2 in the hundreds here.
    expect(chi2).toBeLessThan(40);
  });

  it("draws from the CSPRNG, not Math.random: a Math.random that always answers 0 changes nothing", () => {
    const random = vi.spyOn(Math, "random").mockReturnValue(0);
    try {
      expect(new Set(randomString("0123456789", 1_000)).size).toBe(10);
      expect(random).not.toHaveBeenCalled();
    } finally {
      random.mockRestore();
    }
  });

  it("is uniform for an alphabet that does not divide 256 evenly either", () => {
    const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ"; // 24 characters
    const counts = new Map<string, number>();
    const draws = 120_000;
    for (const ch of randomString(alphabet, draws)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    const expected = draws / alphabet.length;
    const chi2 = [...counts.values()].reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0);
    // 23 degrees of freedom: P(chi2 > 65) is below 1e-5.
    expect(chi2).toBeLessThan(65);
  });
});

describe("key rotation", () => {
  it("verifies old codes with their recorded key and writes new ones with the new key", async () => {
    const [k1] = keyRing("k1");
    const [k2] = keyRing("k2");
    const databaseUrl = await freshDatabase();
    const common = { DATABASE_URL: databaseUrl, COURIER_ENABLED: "false" };
    const before = await startTestServer({ ...common, CODE_HMAC_KEYS: k1 });
    servers.push(before);
    const fx = adminFixtures(before.url);
    const org = await fx.org("Rotating");
    const alice = await fx.identity(org.id, "alice@example.com");
    const bob = await fx.identity(org.id, "bob@example.com");
    fx.close();
    // Issue directly through the engine to hold the codes without a mail server.
    const orgRow = (await before.app.orgs.resolve(org.id, ""))!;
    const oldCode = await before.app.codes.issue({ org: orgRow, purpose: "login", target: { identityId: alice.id, username: alice.username }, requiredState: "active" });
    const bobCode = await before.app.codes.issue({ org: orgRow, purpose: "login", target: { identityId: bob.id, username: bob.username }, requiredState: "active" });
    await before.close();
    servers.pop();

    const after = await startTestServer({ ...common, CODE_HMAC_KEYS: `${k2},${k1}` });
    servers.push(after);
    const verify = (s: TestServer, username: string, code: string) =>
      postJson(s.url, "/codegate.v1.LoginService/VerifyLoginCode", { username, orgId: org.id, code });
    expect((await verify(after, "alice@example.com", oldCode.code)).status).toBe(200);
    const orgAfter = (await after.app.orgs.resolve(org.id, ""))!;
    const newCode = await after.app.codes.issue({ org: orgAfter, purpose: "login", target: { identityId: alice.id, username: alice.username }, requiredState: "active" });
    const rows = await after.app.orm.em.getConnection().execute("select key_id from code where identity_id = ? and dead_at is null", [alice.id]);
    expect(rows[0].key_id).toBe("k2");
    await after.close();
    servers.pop();

    // Once k1 is retired, codes written under it no longer verify.
    const retired = await startTestServer({ ...common, CODE_HMAC_KEYS: k2 });
    servers.push(retired);
    expect((await verify(retired, "bob@example.com", bobCode.code)).status).toBe(401);
    expect((await verify(retired, "alice@example.com", newCode.code)).status).toBe(200);
  });
});

describe("the mail outbox", () => {
  it("seals every body under its own IV (IVs come from a pool refilled from the CSPRNG)", () => {
    const keys = parseKeyRing("MAIL_ENCRYPTION_KEYS", keyRing("m1")[0], { min: 32, max: 32 });
    const ivs = new Set<string>();
    // More than two refills of the 512-IV pool.
    for (let i = 0; i < 1500; i++) {
      const { sealed } = seal(keys, `row-${i}`, `body ${i}`);
      ivs.add(sealed.subarray(0, 12).toString("hex"));
      expect(unseal(keys, "m1", `row-${i}`, sealed)).toBe(`body ${i}`);
    }
    expect(ivs.size).toBe(1500);
  });

  it("writes the code and its mail in one statement, the body encrypted at rest", async () => {
    const s = await startTestServer({ COURIER_ENABLED: "false", MAIL_ENCRYPTION_KEYS: keyRing("m1")[0] });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Outbox");
    const who = await fx.identity(org.id, "outbox@example.com");
    fx.close();
    const res = await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "outbox@example.com", orgId: org.id });
    expect(res.status).toBe(200);
    const conn = s.app.orm.em.getConnection();
    const [mail] = await conn.execute("select id, key_id, body, status, subject from courier_message where recipient = 'outbox@example.com'");
    const [code] = await conn.execute("select id from code where identity_id = ? and dead_at is null", [who.id]);
    expect(mail.status).toBe("queued");
    expect(code).toBeTruthy();
    expect(mail.key_id).toBe("m1");
    const { message } = decodeMail(unseal(s.app.secrets.mailKeys, mail.key_id, mail.id, Buffer.from(mail.body)), mail.id, new Date());
    const plain = await simpleParser(message);
    const theCode = /^ {4}(\S+)$/m.exec(plain.text!)![1];
    expect(Buffer.from(mail.body).includes(Buffer.from(theCode))).toBe(false);
    expect(Buffer.from(mail.body).includes(Buffer.from("login"))).toBe(false);
    expect(mail.subject).not.toContain(theCode);
    // Moving a sealed body to another row does not decrypt.
    expect(() => unseal(s.app.secrets.mailKeys, mail.key_id, code.id, Buffer.from(mail.body))).toThrow();
  });

  it("gives codes and mails time-ordered ids (UUIDv7), so that new rows land at the right edge of their primary keys", async () => {
    const s = await startTestServer({ COURIER_ENABLED: "false" });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Ordered ids");
    const names = ["ord1@example.com", "ord2@example.com", "ord3@example.com"];
    for (const n of names) await fx.identity(org.id, n);
    fx.close();
    const conn = s.app.orm.em.getConnection();
    const stamps: { code: number; mail: number; before: number; after: number }[] = [];
    const msOf = (uuid: string) => {
      expect(uuid[14]).toBe("7"); // the version nibble
      return parseInt(uuid.replace(/-/g, "").slice(0, 12), 16);
    };
    for (const username of names) {
      const before = Date.now();
      expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId: org.id })).status).toBe(200);
      const after = Date.now();
      const [code] = await conn.execute("select c.id from code c join identity i on i.org_id = c.org_id and i.id = c.identity_id where i.username = ?", [username]);
      const [mail] = await conn.execute("select id from courier_message where recipient = ?", [username]);
      stamps.push({ code: msOf(code.id), mail: msOf(mail.id), before, after });
    }
    // UUIDv7 carries the wall-clock time of its making (node:crypto's randomUUIDv7), not the server's clock.
    for (const t of stamps) {
      for (const ms of [t.code, t.mail]) expect(ms >= t.before && ms <= t.after, `id time ${ms} within ${t.before}..${t.after}`).toBe(true);
    }
    for (let i = 1; i < stamps.length; i++) expect(stamps[i].code).toBeGreaterThanOrEqual(stamps[i - 1].code);
  });
});

describe("single use", () => {
  it("holds under concurrent verifications with the right code, straight at the engine, round after round", async () => {
    // Without HTTP in between the verifications race harder than in test/login.test.ts: a
    // consume whose "still live" check was not part of its own update let two of them through.
    const s = await startTestServer({ COURIER_ENABLED: "false" });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Single use");
    for (let i = 0; i < 10; i++) await fx.identity(org.id, `once${i}@example.com`);
    fx.close();
    const resolved = (await s.app.orgs.resolve(org.id, ""))!;
    const wins: number[] = [];
    for (let i = 0; i < 10; i++) {
      const username = `once${i}@example.com`;
      const { code } = await s.app.codes.issue({ org: resolved, purpose: "login", target: { username }, requiredState: "active" });
      const outcomes = await Promise.allSettled(
        Array.from({ length: 30 }, () => s.app.codes.verify({ org: resolved, purpose: "login", target: { username }, requiredState: "active", code })),
      );
      wins.push(outcomes.filter((o) => o.status === "fulfilled").length);
    }
    expect(wins).toEqual(Array(10).fill(1));
  });

  it("holds for a code written by the version before (hashed over its row id, verified in two statements), which still verifies once", async () => {
    const s = await startTestServer({ COURIER_ENABLED: "false" });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Upgraded");
    const who = await fx.identity(org.id, "upgraded@example.com");
    fx.close();
    const key = s.app.secrets.codeKeys.current;
    const legacy = async (code: string) => {
      const id = randomUUID();
      await s.app.orm.em.getConnection().execute(
        `insert into code (org_id, id, identity_id, purpose, binding, code_hash, hash_input, key_id, created_at, expires_at, attempts, max_attempts)
         values (?, ?, ?, 'login', '', ?, 1, ?, now(), now() + interval '10 minutes', 0, 5)`,
        [org.id, id, who.id, rowCodeHash(key.key, id, code), key.id],
      );
    };
    const verify = (code: string) => postJson(s.url, "/codegate.v1.LoginService/VerifyLoginCode", { username: "upgraded@example.com", orgId: org.id, code });
    await legacy("314159");
    expect((await verify("271828")).status).toBe(401);
    expect((await verify("314159")).status).toBe(200);
    expect((await verify("314159")).status).toBe(401);

    await legacy("161803");
    const resolved = (await s.app.orgs.resolve(org.id, ""))!;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 30 }, () =>
        s.app.codes.verify({ org: resolved, purpose: "login", target: { username: "upgraded@example.com" }, requiredState: "active", code: "161803" }),
      ),
    );
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
  });
});

// Rules a mutation audit could break without a test failing: each test here fails when
// its mechanism is taken out (a plain hash, a non-unique index, a mail without its code).
/** A server of this file and an organization with one active identity. */
async function serverWithIdentity(env: Record<string, string>, orgName: string, username: string) {
  const s = await startTestServer({ COURIER_ENABLED: "false", ...env });
  servers.push(s);
  const fx = adminFixtures(s.url);
  const org = await fx.org(orgName);
  const identity = await fx.identity(org.id, username);
  fx.close();
  return { s, org, identity };
}

describe("what the keys and the database enforce", () => {
  it("keeps a code as HMAC-SHA-256 under the configured key, over its owner and itself: not a plain hash, and another key gives another", async () => {
    const [k1] = keyRing("k1");
    const { s, org, identity: alice } = await serverWithIdentity({ CODE_HMAC_KEYS: k1 }, "Keyed", "alice@example.com");
    const issued = await s.app.codes.issue({ org: (await s.app.orgs.resolve(org.id, ""))!, purpose: "login", target: { identityId: alice.id, username: alice.username }, requiredState: "active" });
    const [row] = await s.app.orm.em.getConnection().execute("select code_hash, key_id from code where identity_id = ? and dead_at is null", [alice.id]);
    const stored = Buffer.from(row.code_hash);
    const owner = `${org.id}\0alice@example.com\0login\0\0`;
    const key = Buffer.from(k1.slice("k1:".length), "base64");
    expect(row.key_id).toBe("k1");
    expect(stored.equals(createHmac("sha256", key).update(owner).update(issued.code).digest())).toBe(true);
    expect(stored.equals(createHash("sha256").update(owner).update(issued.code).digest())).toBe(false);
    expect(stored.equals(createHmac("sha256", randomBytes(32)).update(owner).update(issued.code).digest())).toBe(false);
    expect(stored.includes(Buffer.from(issued.code))).toBe(false);
  });

  it("refuses a second live code for one identity, purpose and binding in the database itself, whatever statement writes it", async () => {
    const { s, org, identity: alice } = await serverWithIdentity({}, "One live code", "alice@example.com");
    const orgRow = (await s.app.orgs.resolve(org.id, ""))!;
    await s.app.codes.issue({ org: orgRow, purpose: "login", target: { identityId: alice.id, username: alice.username }, requiredState: "active" });
    const db = new pg.Client(s.databaseUrl);
    await db.connect();
    try {
      await db.query("begin");
      await db.query("create temp table twin on commit drop as select * from code where identity_id = $1 and dead_at is null", [alice.id]);
      await db.query("update twin set id = gen_random_uuid(), slot = null");
      await expect(db.query("insert into code select * from twin")).rejects.toMatchObject({ code: "23505", constraint: "code_live_key" });
      await db.query("rollback");
    } finally {
      await db.end();
    }
  });

  it("queues no mail for a send that writes no code: a flow past the bound-codes cap gets neither", async () => {
    const { s, org } = await serverWithIdentity({}, "Code and mail together", "bound@example.com");
    const conn = s.app.orm.em.getConnection();
    const count = async () => {
      const [row] = await conn.execute(
        "select (select count(*)::int from code c join identity i on i.org_id = c.org_id and i.id = c.identity_id where i.username_normalized = 'bound@example.com' and c.dead_at is null) as codes, (select count(*)::int from courier_message where recipient = 'bound@example.com') as mails",
      );
      return row as { codes: number; mails: number };
    };
    for (let flow = 1; flow <= 4; flow++) {
      const sent = await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "bound@example.com", orgId: org.id, binding: `flow-${flow}-0123456789abcdef` });
      expect(sent.status).toBe(200);
    }
    // Three live bound codes at most (abuse-holes.test.ts): the fourth flow's send wrote nothing, mail included.
    expect(await count()).toEqual({ codes: 3, mails: 3 });
  });
});
