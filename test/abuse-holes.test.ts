// The abuse holes of issue 17, each probed as an attacker would: a padded
// X-Forwarded-For, a scrape of /metrics, guesses against an account with no
// live code or someone else's flow, admin codes guessed by username, a weak
// admin token, and the statements a call runs for known and unknown usernames.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createHash, generateKeyPairSync } from "node:crypto";
import { createLocalJWKSet, jwtVerify } from "jose";
import { ManualClock } from "../src/domain/clock.ts";
import { ConfigError } from "../src/config/env.ts";
import { loadConfig } from "../src/config/config.ts";
import { mostPerDay, oneIn, worstDailyGuessChance } from "../src/domain/guess-chance.ts";
import type { Sql } from "../src/store/sql.ts";
import { AnswerTimes, type Hold } from "../src/rules/answer-times.ts";
import type { StartOptions } from "../src/server/app.ts";
import { bearer, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { ADMIN_TOKEN, DEPLOYMENT_ENV, startTestServer, type TestServer } from "./support/server.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const L = "/codegate.v1.LoginService";
const servers: TestServer[] = [];
let smtp: SmtpSink;
const clock = new ManualClock();

async function serverWith(
  env: Record<string, string>,
  instrumentSql?: (sql: Sql) => Sql,
  times: Pick<StartOptions, "sendTimes" | "failureTimes"> = {},
): Promise<{ server: TestServer; orgId: string }> {
  const server = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", ...env }, { clock, instrumentSql, ...times });
  servers.push(server);
  const fx = adminFixtures(server.url);
  const orgId = (await fx.org("Probed")).id;
  await fx.identity(orgId, "owner@example.com");
  fx.close();
  return { server, orgId };
}

beforeAll(async () => {
  smtp = await SmtpSink.create();
});
afterAll(async () => {
  for (const s of servers) await s.close();
  await smtp?.stop();
});

const live = async (server: TestServer, username: string) =>
  (await server.app.orm.em
    .getConnection()
    .execute(
      "select c.binding, c.attempts from code c join identity i on i.org_id = c.org_id and i.id = c.identity_id where i.username_normalized = ? and c.dead_at is null order by c.created_at",
      [username],
    )) as { binding: string; attempts: number }[];

describe("forwarded addresses", () => {
  it("never yield an address the client wrote, however X-Forwarded-For is padded; an IPv6 client counts by its /64", async () => {
    const { server, orgId } = await serverWith({ TRUSTED_PROXIES: "127.0.0.1", RATE_LIMIT_SEND_PER_ADDRESS: "3/1m" });
    clock.advance(60_000 - (clock.now().getTime() % 60_000) + 1000);
    const send = (i: number, forwarded: string) => postJson(server.url, `${L}/SendLoginCode`, { username: `u${i}@example.com`, orgId }, { "x-forwarded-for": forwarded });
    // Each request spoofs a new address on the left, padded past 512 characters; the proxy appends the real one.
    const statuses = [];
    for (let i = 0; i < 8; i++) statuses.push((await send(i, `${`10.9.${i}.1, `.repeat(60)}6.6.6.${i}, 198.51.100.7`)).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429, 429, 429, 429]);
    // Two addresses of one /64 share its limit; another /64 has its own.
    const v6 = [];
    for (let i = 0; i < 4; i++) v6.push((await send(10 + i, `2001:db8:1:2::${i + 1}`)).status);
    expect(v6).toEqual([200, 200, 200, 429]);
    expect((await send(20, "2001:db8:1:3::1")).status).toBe(200);
  });
});

describe("operations endpoints", () => {
  it("are not on the API port: /metrics and /readyz answer there 404, on the operations listener (loopback) 200", async () => {
    const { server } = await serverWith({});
    for (const path of ["/metrics", "/readyz"]) {
      expect((await fetch(server.url + path)).status, path).toBe(404);
      expect((await fetch(server.app.opsUrl + path)).status, path).toBe(200);
    }
    expect(new URL(server.app.opsUrl!).hostname).toBe("127.0.0.1");
    expect(loadConfig({}).opsHost).toBe("127.0.0.1");
    // The counter that rises only for a known username is on the operations listener only.
    expect(await (await fetch(server.app.opsUrl + "/metrics")).text()).toContain("codegate_codes_issued_total");
    expect((await fetch(server.url + "/healthz")).status).toBe(200);
  });
});

describe("lock-out", () => {
  it("(a) a guess when no live code exists costs the account nothing", async () => {
    const { server, orgId } = await serverWith({ RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "3/24h" });
    for (let i = 0; i < 10; i++) expect((await postJson(server.url, `${L}/VerifyLoginCode`, { username: "owner@example.com", orgId, code: "000000" })).status).toBe(401);
    // The full budget is left: two wrong guesses, then the right code.
    const before = smtp.mailsTo("owner@example.com").length;
    await postJson(server.url, `${L}/SendLoginCode`, { username: "owner@example.com", orgId });
    const code = codeFrom(await smtp.nextMailTo("owner@example.com", before));
    const wrong = code === "000000" ? "111111" : "000000";
    for (let i = 0; i < 2; i++) expect((await postJson(server.url, `${L}/VerifyLoginCode`, { username: "owner@example.com", orgId, code: wrong })).status).toBe(401);
    expect((await postJson(server.url, `${L}/VerifyLoginCode`, { username: "owner@example.com", orgId, code })).status).toBe(200);
  });

  it("(b) the worst-case daily chance of a right guess follows from the settings, and settings above MAX_GUESS_CHANCE are refused", async () => {
    // Defaults: 6 digits, 5 attempts, sends 1/30s,5/1h,10/24h (20 a day at worst: fixed windows), 10 wrong guesses a day (20 at worst).
    expect(mostPerDay([{ max: 10, windowMs: 86_400_000 }])).toBe(20);
    expect(mostPerDay([{ max: 1, windowMs: 30_000 }, { max: 5, windowMs: 3_600_000 }])).toBe(125);
    const defaults = loadConfig({});
    const chance = worstDailyGuessChance({ policies: defaults.codes, ...defaults.rateLimits });
    expect(chance.chance).toBeCloseTo((20 + 3 * 20) / 1e6, 12);
    expect(oneIn(chance.chance)).toBe("1 in 12,500");
    // No send limit, or too short codes: refused at start, saying why and what to change.
    for (const env of [{ RATE_LIMIT_SEND_PER_USERNAME: "off" }, { CODE_LOGIN_LENGTH: "4" }]) {
      const err = (() => {
        try {
          loadConfig(env);
        } catch (e) {
          return e;
        }
      })();
      expect(err, JSON.stringify(env)).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems.join("\n")).toMatch(/worst-case chance .* above MAX_GUESS_CHANCE \(1 in 10,000\).*lengthen the codes/);
    }
    // Longer codes allow looser limits.
    expect(() => loadConfig({ CODE_LOGIN_LENGTH: "8", CODE_REGISTRATION_LENGTH: "8", CODE_RECOVERY_LENGTH: "8", RATE_LIMIT_SEND_PER_USERNAME: "1/30s,5/1h" })).not.toThrow();
    // An organization's overrides are held to the same bound.
    const { server } = await serverWith({ MAX_GUESS_CHANCE: "1/10000", RATE_LIMIT_SEND_PER_USERNAME: "1/30s,5/1h,10/24h", RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "10/24h" });
    const weak = await postJson(server.url, "/codegate.v1.AdminService/CreateOrganization", { name: "Weak", settings: { loginCode: { length: 4 } } }, bearer(ADMIN_TOKEN));
    expect(weak.status).toBe(400);
    expect(weak.body.message).toMatch(/^settings: .*1 in 10,000.*these allow 1 in \d/);
    // So are its own limits, with the server's codes: more sends, or more wrong guesses, a day.
    for (const rateLimits of [{ sendPerUsername: [{ max: 1000, window: "3600s" }] }, { verifyFailuresPerUsername: [{ max: 1000, window: "3600s" }] }]) {
      const loose = await postJson(server.url, "/codegate.v1.AdminService/CreateOrganization", { name: "Loose", settings: { rateLimits } }, bearer(ADMIN_TOKEN));
      expect(loose.status, JSON.stringify(rateLimits)).toBe(400);
      expect(loose.body.message).toMatch(/^settings: .*1 in 10,000/);
    }
    // And the server says its figure when it starts.
    expect(server.logs.some((l) => /worst-case chance of guessing an account's code within a day: 1 in 12,500/.test(l))).toBe(true);
  });

  it("(c) guesses without a flow's binding never touch its code, and another flow's guesses never lock its owner out", async () => {
    const { server, orgId } = await serverWith({ RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "3/24h" });
    const owner = "owner-flow-7f3a9c21e4b84d6f";
    const attacker = "attacker-flow-0a1b2c3d4e5f6a7b";
    const send = (binding?: string) => postJson(server.url, `${L}/SendLoginCode`, { username: "owner@example.com", orgId, binding });
    const verify = (code: string, binding?: string) => postJson(server.url, `${L}/VerifyLoginCode`, { username: "owner@example.com", orgId, code, binding });
    const before = smtp.mailsTo("owner@example.com").length;
    expect((await send(owner)).status).toBe(200);
    const ownerCode = codeFrom(await smtp.nextMailTo("owner@example.com", before));
    const wrong = ownerCode === "000000" ? "111111" : "000000";
    // Without the binding, and with another one, guesses find nothing: the owner's code keeps all its attempts.
    for (let i = 0; i < 8; i++) expect((await verify(wrong)).status).toBe(401);
    for (let i = 0; i < 8; i++) expect((await verify(ownerCode, attacker)).status).toBe(401);
    expect(await live(server, "owner@example.com")).toEqual([expect.objectContaining({ attempts: 0 })]);
    // The attacker's own flow and the seed path do not replace the owner's code...
    expect((await send(attacker)).status).toBe(200);
    expect((await send()).status).toBe(200);
    await smtp.waitFor(() => smtp.mailsTo("owner@example.com").length === before + 3);
    // ...and the attacker spends the username's whole budget of wrong guesses on its own flow.
    for (let i = 0; i < 5; i++) expect((await verify(wrong, attacker)).status).toBe(401);
    // The owner, past that limit, still gets in with the fresh code of its flow.
    expect((await verify(ownerCode, owner)).status).toBe(200);
  });

  it("(c) caps the live bound codes of an account, also under concurrent sends of many flows", async () => {
    const { server, orgId } = await serverWith({ COURIER_ENABLED: "false" });
    const fx = adminFixtures(server.url);
    await fx.identity(orgId, "crowd@example.com");
    fx.close();
    const flow = (i: number) => `concurrent-flow-${String(i).padStart(4, "0")}-abcdef`;
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => postJson(server.url, `${L}/SendLoginCode`, { username: "crowd@example.com", orgId, binding: flow(i) })));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const codes = await live(server, "crowd@example.com");
    expect(codes.length).toBeGreaterThan(0);
    expect(codes.length).toBeLessThanOrEqual(3);
    expect(new Set(codes.map((c) => c.binding)).size).toBe(codes.length);
    // Filled up one flow at a time, the account holds exactly 3; a full account takes no new flow...
    for (let i = 50; i < 53; i++) await postJson(server.url, `${L}/SendLoginCode`, { username: "crowd@example.com", orgId, binding: flow(i) });
    const full = await live(server, "crowd@example.com");
    expect(full).toHaveLength(3);
    expect((await postJson(server.url, `${L}/SendLoginCode`, { username: "crowd@example.com", orgId, binding: flow(99) })).status).toBe(200);
    expect((await live(server, "crowd@example.com")).map((c) => c.binding)).toEqual(full.map((c) => c.binding));
    // ...while a flow that has a code gets a new one in its place.
    const [{ id: before }] = await server.app.orm.em.getConnection().execute("select id from code where binding = ? and dead_at is null", [full[0].binding]);
    const bindingOf = new Map(Array.from({ length: 100 }, (_, i) => [`b:${createHash("sha256").update(flow(i)).digest("base64url")}`, flow(i)]));
    await postJson(server.url, `${L}/SendLoginCode`, { username: "crowd@example.com", orgId, binding: bindingOf.get(full[0].binding) });
    const [{ id: after }] = await server.app.orm.em.getConnection().execute("select id from code where binding = ? and dead_at is null", [full[0].binding]);
    expect(after).not.toBe(before);
    expect(await live(server, "crowd@example.com")).toHaveLength(3);
  });
});

describe("wrong codes per client address", () => {
  it("are limited whatever the usernames, with resource_exhausted and RetryInfo", async () => {
    const { server, orgId } = await serverWith({ RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "5/1m" });
    clock.advance(60_000 - (clock.now().getTime() % 60_000) + 1000);
    const statuses = [];
    for (let i = 0; i < 7; i++) statuses.push((await postJson(server.url, `${L}/VerifyLoginCode`, { username: `sprayed${i}@example.com`, orgId, code: "123456" })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    const limited = await postJson(server.url, `${L}/VerifyLoginCode`, { username: "owner@example.com", orgId, code: "123456" });
    expect(limited.body.code).toBe("resource_exhausted");
    expect(limited.body.details.some((d: { type: string }) => d.type === "google.rpc.RetryInfo")).toBe(true);
  });
});

describe("an administrator's recovery code", () => {
  it("is not reached by guesses by username: its attempts stay untouched", async () => {
    const { server, orgId } = await serverWith({});
    const fx = adminFixtures(server.url);
    const who = await fx.identity(orgId, "handed@example.com");
    fx.close();
    const created = await postJson(server.url, "/admin/recovery/code", { identity_id: who.id, expires_in: "1h" }, bearer(ADMIN_TOKEN));
    expect(created.status).toBe(201);
    for (let i = 0; i < 6; i++) {
      expect((await postJson(server.url, "/codegate.v1.RecoveryService/VerifyRecoveryCode", { username: "handed@example.com", orgId, code: created.body.recovery_code })).status).toBe(401);
    }
    expect(await live(server, "handed@example.com")).toEqual([{ binding: "admin", attempts: 0 }]);
  });
});

describe("a deployment on a real database", () => {
  it("must have its keys and PUBLIC_URL; nothing is generated and no admin token is printed", async () => {
    const env = { DATABASE_URL: "postgres://db.invalid/codegate" };
    const problems = (() => {
      try {
        loadConfig(env);
        return [];
      } catch (e) {
        return (e as ConfigError).problems;
      }
    })();
    for (const name of ["CODE_HMAC_KEYS", "MAIL_ENCRYPTION_KEYS", "TOKEN_SIGNING_KEY", "PUBLIC_URL"]) expect(problems.join("\n")).toContain(`${name}: required when DATABASE_URL is set`);
    // Commands that only reach the database need none of them.
    expect(() => loadConfig(env, { serving: false })).not.toThrow();
    // No ADMIN_TOKEN and no stored token: still nothing printed.
    const server = await startTestServer({ ADMIN_TOKEN: "" });
    servers.push(server);
    expect(server.app.firstAdminToken).toBeUndefined();
    expect(server.logs.join("\n")).not.toMatch(/cga_/);
  });

  it("refuses a guessable ADMIN_TOKEN, and limits and logs failed admin authentications (past the limit, a line a minute)", async () => {
    for (const token of ["changeme", "x".repeat(40)]) expect(() => loadConfig({ ADMIN_TOKEN: token })).toThrow(/ADMIN_TOKEN: expected a strong random token/);
    const { server } = await serverWith({ RATE_LIMIT_ADMIN_AUTH_FAILURES_PER_ADDRESS: "3/1m" });
    clock.advance(60_000 - (clock.now().getTime() % 60_000) + 1000);
    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await postJson(server.url, "/codegate.v1.AdminService/ListOrganizations", {}, bearer(`guess-${i}`))).status);
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    // The right token is still taken.
    expect((await postJson(server.url, "/codegate.v1.AdminService/ListOrganizations", {}, bearer(ADMIN_TOKEN))).status).toBe(200);
    // Twenty more past the limit: refused, and not one line each.
    for (let i = 5; i < 25; i++) expect((await postJson(server.url, "/codegate.v1.AdminService/ListOrganizations", {}, bearer(`guess-${i}`))).status).toBe(429);
    const warnings = server.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "admin authentication failed");
    // Each failure within the limit; past it, one line a minute.
    expect(warnings.map((w) => w.limited)).toEqual([false, false, false, true]);
    expect(warnings[0]).toMatchObject({ level: "warn", address: "127.0.0.1" });
    expect(warnings[3]).toMatchObject({ level: "warn", address: "127.0.0.1", limitedSinceLastLine: 0 });
    expect(server.logs.join("\n")).not.toContain("guess-0");
  });
});

/**
 * AnswerTimes that says what it is told: "timed <kind> <group>" for a call that did the work,
 * "held <kind>" for a wait. Its waits end when `release` is called (all of them, from then on).
 */
function watchedTimes(seen: string[]): AnswerTimes & { release(): void } {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  return new (class extends AnswerTimes {
    release = release;
    override hold(kind: string): Hold {
      const hold = super.hold(kind);
      return {
        record: (group?: string) => (seen.push(`timed ${kind}${group ? ` ${group}` : ""}`), hold.record(group)),
        passed: () => (seen.push(`held ${kind}`), hold.passed()),
        cancel: () => hold.cancel(),
      };
    }
  })({ arm: () => ({ passed: released, cancel: () => {} }) });
}

/** An organization with an active, a pending and a disabled identity: known@, pending@ and disabled@example.com. */
async function orgOfEveryState(server: TestServer, name: string, settings: Parameters<ReturnType<typeof adminFixtures>["org"]>[1]) {
  const fx = adminFixtures(server.url);
  const org = await fx.org(name, settings);
  await fx.identity(org.id, "known@example.com", "active");
  await fx.identity(org.id, "pending@example.com", "pending");
  await fx.identity(org.id, "disabled@example.com", "disabled");
  fx.close();
  return org;
}

describe("every public call", () => {
  it("runs the same statements, in number and text, for known, unknown, pending and disabled usernames", async () => {
    const recorded: string[] = [];
    const recording = (sql: Sql): Sql => ({
      query: (text, params, signal) => (recorded.push(text.replace(/\s+/g, " ").trim()), sql.query(text, params, signal)),
      transaction: (work) => sql.transaction((tx) => work(recording(tx))),
    });
    const { server } = await serverWith({ COURIER_ENABLED: "false" }, recording);
    const org = await orgOfEveryState(server, "Uniform", { selfServiceSignup: true, notifyUnknownRecovery: true });
    const usernames = ["known@example.com", "unknown@example.com", "pending@example.com", "disabled@example.com"];
    const calls: [string, (username: string) => Record<string, string>][] = [
      ["/codegate.v1.LoginService/SendLoginCode", (username) => ({ username, orgId: org.id })],
      ["/codegate.v1.LoginService/SendLoginCode", (username) => ({ username, orgId: org.id, binding: "a-flow-binding-0123456789" })],
      ["/codegate.v1.RegistrationService/ResendRegistrationCode", (username) => ({ username, orgId: org.id })],
      ["/codegate.v1.RecoveryService/SendRecoveryCode", (username) => ({ username, orgId: org.id })],
      ["/codegate.v1.LoginService/VerifyLoginCode", (username) => ({ username, orgId: org.id, code: "000000" })],
      ["/codegate.v1.RegistrationService/CompleteRegistration", (username) => ({ username, orgId: org.id, code: "000000" })],
      ["/codegate.v1.RecoveryService/VerifyRecoveryCode", (username) => ({ username, orgId: org.id, code: "000000" })],
    ];
    // The organization is read once and cached: read it before recording.
    await postJson(server.url, "/codegate.v1.LoginService/SendLoginCode", { username: "warm@example.com", orgId: org.id });
    for (const [path, body] of calls) {
      const seen: string[][] = [];
      for (const username of usernames) {
        recorded.length = 0;
        expect((await postJson(server.url, path, body(username))).status, `${path} ${username}`).toBeLessThan(500);
        seen.push([...recorded]);
      }
      expect(seen[0].length, path).toBeGreaterThan(0);
      // A send is one statement, and so is a verification by username.
      expect(seen[0], path).toHaveLength(1);
      for (const [i, statements] of seen.entries()) expect(statements, `${path} for ${usernames[i]}`).toEqual(seen[0]);
    }
    // Register: for a new username (a new pending identity), a pending, an active and a disabled one.
    const register: string[][] = [];
    for (const username of ["brand-new@example.com", "pending@example.com", "known@example.com", "disabled@example.com"]) {
      recorded.length = 0;
      expect((await postJson(server.url, "/codegate.v1.RegistrationService/Register", { username, orgId: org.id })).status).toBe(200);
      register.push([...recorded]);
    }
    for (const statements of register) expect(statements).toEqual(register[0]);
  });

  it("answers no sooner than most sends that queued mail, whether or not it queued any (answer-times.ts): each send of a kind is held, those that queue mail timed", async () => {
    const seen: string[] = [];
    const sendTimes = watchedTimes(seen);
    const { server } = await serverWith({ COURIER_ENABLED: "false" }, undefined, { sendTimes });
    const org = await orgOfEveryState(server, "Timed", { selfServiceSignup: true });
    seen.length = 0; // the pending identity's registration code
    const send = async (service: string, method: string, username: string, orgId = org.id) =>
      expect((await postJson(server.url, `/codegate.v1.${service}/${method}`, { username, orgId })).status, `${method} ${username}`).toBe(200);
    // No login send has done the work yet, so both are held (to the longest hold), the known username's
    // too: neither answers before its hold has passed.
    let answered = 0;
    const first = [send("LoginService", "SendLoginCode", "known@example.com"), send("LoginService", "SendLoginCode", "unknown@example.com")].map((p) => p.then(() => answered++));
    await vi.waitFor(() => expect(seen.toSorted()).toEqual(["held login", "held login", "timed login code"]));
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200); // asked after the holds began, answered while they last
    expect(answered).toBe(0);
    sendTimes.release();
    await Promise.all(first);
    seen.length = 0;
    for (const username of ["pending@example.com", "disabled@example.com"]) await send("LoginService", "SendLoginCode", username);
    await send("LoginService", "SendLoginCode", "known@example.com", "or-aaaaa-aaaaa-aaaaaaaaaaaaaaaa"); // an unknown organization
    for (const username of ["pending@example.com", "known@example.com"]) await send("RegistrationService", "ResendRegistrationCode", username);
    for (const username of ["known@example.com", "unknown@example.com"]) await send("RecoveryService", "SendRecoveryCode", username);
    // Sign-up: a new username gets a code, an active one a notice (both mail), a disabled one nothing.
    for (const username of ["brand-new@example.com", "known@example.com", "disabled@example.com"]) await send("RegistrationService", "Register", username);
    expect(seen.join(", ")).toBe(
      [
        ...["held login", "held login", "held login"],
        ...["timed registration code, held registration", "held registration"],
        ...["timed recovery code, held recovery", "held recovery"],
        ...["timed registration+signup code, held registration+signup", "timed registration+signup notice, held registration+signup", "held registration+signup"],
      ].join(", "),
    );
  });

  it("holds the other kinds of send too, each timed in the group of what it wrote: a bound code, a recovery notice for an unknown address, a pending username's sign-up", async () => {
    const seen: string[] = [];
    const sendTimes = watchedTimes(seen);
    sendTimes.release();
    const { server } = await serverWith({ COURIER_ENABLED: "false" }, undefined, { sendTimes });
    const org = await orgOfEveryState(server, "Timed groups", { selfServiceSignup: true, notifyUnknownRecovery: true });
    seen.length = 0; // the pending identity's registration code
    const send = async (method: string, username: string, extra: Record<string, string> = {}) =>
      expect((await postJson(server.url, `/codegate.v1.${method}`, { username, orgId: org.id, ...extra })).status, `${method} ${username}`).toBe(200);
    const binding = { binding: "a-flow-binding-0123456789" };
    for (const username of ["known@example.com", "unknown@example.com"]) await send("LoginService/SendLoginCode", username, binding);
    // With notifyUnknownRecovery, an address without an account gets a notice, a disabled account nothing.
    for (const username of ["unknown@example.com", "known@example.com", "disabled@example.com"]) await send("RecoveryService/SendRecoveryCode", username);
    // Sign-up of a pending username mails it a fresh code.
    await send("RegistrationService/Register", "pending@example.com");
    expect(seen.join(", ")).toBe(
      [
        ...["timed login code+bound, held login", "held login"],
        ...["timed recovery notice, held recovery", "timed recovery code, held recovery", "held recovery"],
        "timed registration+signup code, held registration+signup",
      ].join(", "),
    );
  });

  it("fails a wrong guess by username no sooner than most wrong guesses that a live code took: each failure held, those a live code took timed", async () => {
    const seen: string[] = [];
    const failureTimes = watchedTimes(seen);
    failureTimes.release();
    const { server, orgId } = await serverWith({}, undefined, { failureTimes });
    const fx = adminFixtures(server.url);
    await fx.identity(orgId, "coded@example.com", "active");
    fx.close();
    expect((await postJson(server.url, `${L}/SendLoginCode`, { username: "coded@example.com", orgId })).status).toBe(200);
    const code = codeFrom(await smtp.nextMailTo("coded@example.com"));
    const wrong = code === "000000" ? "111111" : "000000";
    for (const username of ["coded@example.com", "owner@example.com", "nobody@example.com"]) {
      expect((await postJson(server.url, `${L}/VerifyLoginCode`, { username, orgId, code: wrong })).status, username).toBe(401);
    }
    expect((await postJson(server.url, `${L}/VerifyLoginCode`, { username: "coded@example.com", orgId, code })).status).toBe(200);
    // The live code took the first guess; none took the other two; the right code is not a failure.
    expect(seen).toEqual(["timed login", "held login", "held login", "held login"]);
  });

  it("times the guess that locks a code like any other a live code took; past the username's failure limit, a guess that no code takes is held like one at an unknown username", async () => {
    const seen: string[] = [];
    const failureTimes = watchedTimes(seen);
    failureTimes.release();
    const limits = { CODE_LOGIN_MAX_ATTEMPTS: "2", RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "3/24h", RATE_LIMIT_SEND_PER_USERNAME: "100/1s" };
    const { server, orgId } = await serverWith(limits, undefined, { failureTimes });
    const sendCode = async () => {
      expect((await postJson(server.url, `${L}/SendLoginCode`, { username: "owner@example.com", orgId })).status).toBe(200);
      return codeFrom(await smtp.nextMailTo("owner@example.com"));
    };
    const wrongFor = (code: string) => (code === "000000" ? "111111" : "000000");
    const guess = async (username: string, code: string) =>
      expect((await postJson(server.url, `${L}/VerifyLoginCode`, { username, orgId, code })).status, username).toBe(401);
    const first = await sendCode();
    await guess("owner@example.com", wrongFor(first));
    await guess("owner@example.com", wrongFor(first)); // its second and last attempt: the code dies
    expect(await live(server, "owner@example.com")).toEqual([]);
    await guess("owner@example.com", wrongFor(first)); // no live code takes it
    const second = await sendCode();
    await guess("owner@example.com", wrongFor(second)); // the third failure of the day
    await guess("owner@example.com", wrongFor(second)); // past the limit: a code takes only its first attempt
    expect(await live(server, "owner@example.com")).toEqual([{ binding: "", attempts: 1 }]);
    await guess("nobody@example.com", "000000");
    expect(seen).toEqual(["timed login", "held login", "timed login", "held login", "held login", "timed login", "held login", "held login", "held login"]);
  });
});

describe("answers that carry secrets", () => {
  it("are never kept by a cache nor sniffed by a browser: every RPC answer says no-store and nosniff, over Connect and gRPC-Web", async () => {
    const { server, orgId } = await serverWith({});
    const fx = adminFixtures(server.url);
    const identity = await fx.identity(orgId, "secret@example.com", "active");
    fx.close();
    expect((await postJson(server.url, `${L}/SendLoginCode`, { username: "secret@example.com", orgId })).status).toBe(200);
    const code = codeFrom(await smtp.nextMailTo("secret@example.com"));
    const answers = {
      proof: await postJson(server.url, `${L}/VerifyLoginCode`, { username: "secret@example.com", orgId, code }),
      recoveryCode: await postJson(server.url, "/codegate.v1.AdminService/CreateRecoveryCode", { identity_id: identity.id }, bearer(ADMIN_TOKEN)),
      refusal: await postJson(server.url, `${L}/VerifyLoginCode`, { username: "secret@example.com", orgId, code }),
    };
    expect(answers.proof.body).toMatchObject({ token: expect.any(String) });
    expect(answers.recoveryCode.body).toMatchObject({ recovery_code: expect.any(String) });
    expect(answers.refusal.status).toBe(401);
    const grpcWeb = await fetch(`${server.url}/grpc.health.v1.Health/Check`, { method: "POST", headers: { "content-type": "application/grpc-web+proto" }, body: new Uint8Array(5) });
    for (const [name, headers] of [...Object.entries(answers).map(([n, a]) => [n, a.headers] as const), ["grpc-web", grpcWeb.headers] as const]) {
      expect(headers.get("cache-control"), name).toBe("no-store");
      expect(headers.get("x-content-type-options"), name).toBe("nosniff");
    }
  });
});

describe("the signing key's rotation", () => {
  it("keeps tokens signed before it verifying against the JWKS after it", async () => {
    const { server: before, orgId } = await serverWith({});
    const send = async (s: TestServer) => {
      const n = smtp.mailsTo("owner@example.com").length;
      await postJson(s.url, `${L}/SendLoginCode`, { username: "owner@example.com", orgId });
      const code = codeFrom(await smtp.nextMailTo("owner@example.com", n));
      const r = await postJson(s.url, `${L}/VerifyLoginCode`, { username: "owner@example.com", orgId, code });
      expect(r.status).toBe(200);
      return r.body.token as string;
    };
    const old = await send(before);
    const next = Buffer.from(generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" })).toString("base64");
    // Step 1 publishes the next key beside the current one; step 2 signs with it and keeps the old one published.
    const step1 = await startTestServer({ DATABASE_URL: before.databaseUrl, COURIER_ENABLED: "false", TOKEN_VERIFICATION_KEYS: next }, { clock });
    servers.push(step1);
    expect((await (await fetch(`${step1.url}/.well-known/jwks.json`)).json()).keys).toHaveLength(2);
    const after = await startTestServer(
      { DATABASE_URL: before.databaseUrl, SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", TOKEN_SIGNING_KEY: next, TOKEN_VERIFICATION_KEYS: DEPLOYMENT_ENV.TOKEN_SIGNING_KEY },
      { clock },
    );
    servers.push(after);
    const jwks = createLocalJWKSet(await (await fetch(`${after.url}/.well-known/jwks.json`)).json());
    const opts = { audience: "codegate", currentDate: clock.now() };
    await expect(jwtVerify(old, jwks, opts)).resolves.toMatchObject({ payload: { purpose: "login" } });
    const fresh = await send(after);
    await expect(jwtVerify(fresh, jwks, opts)).resolves.toMatchObject({ payload: { purpose: "login" } });
    expect(JSON.parse(Buffer.from(fresh.split(".")[0], "base64url").toString()).kid).not.toBe(JSON.parse(Buffer.from(old.split(".")[0], "base64url").toString()).kid);
  });
});
