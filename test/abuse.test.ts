import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { connect } from "node:net";
import pg from "pg";
import { status } from "@grpc/grpc-js";
import { fromBinary } from "@bufbuild/protobuf";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.ts";
import { ManualClock } from "../src/domain/clock.ts";
import { ADMIN_TOKEN, freshDatabase, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const servers: TestServer[] = [];
let smtp: SmtpSink;
const clock = new ManualClock();
const LIMITS = {
  RATE_LIMIT_SEND_PER_USERNAME: "1/30s,5/1h",
  RATE_LIMIT_SEND_PER_ADDRESS: "1000/1m",
  RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "12/24h",
  COURIER_POLL_INTERVAL: "50ms",
};
let server: TestServer;
let orgId: string;
const send = (s: TestServer, username: string, org = orgId, headers: Record<string, string> = {}) =>
  postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId: org }, headers);
const verify = (username: string, code: string) => postJson(server.url, "/codegate.v1.LoginService/VerifyLoginCode", { username, orgId, code });
/** Resolves once `n` statements on the test's database wait on a lock (one the test's own session holds). */
const waitingOnLocks = (db: pg.Client, n: number) =>
  vi.waitFor(
    async () => {
      const { rows } = await db.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`);
      expect(rows[0].n).toBe(n);
    },
    { timeout: 10_000, interval: 20 },
  );

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({ ...LIMITS, SMTP_URL: smtp.url }, { clock });
  servers.push(server);
  const fx = adminFixtures(server.url);
  orgId = (await fx.org("Limited")).id;
  for (const u of ["known@example.com", "guessed@example.com", "grpc@example.com"]) await fx.identity(orgId, u);
  fx.close();
});
// Limit windows are fixed (30 s, 1 min, 1 h, 24 h: all divide a day): every test
// starts just after a day begins, so its requests never straddle two windows.
beforeEach(() => clock.advance(86_400_000 - (clock.now().getTime() % 86_400_000) + 1000));
afterAll(async () => {
  for (const s of servers) await s.close();
  await smtp?.stop();
});

describe("send limits per (organization, username, purpose)", () => {
  it("limit a known and an unknown username alike, with RetryInfo and Retry-After", async () => {
    for (const username of ["known@example.com", "unknown@example.com"]) {
      expect((await send(server, username)).status).toBe(200);
      const limited = await send(server, username);
      expect(limited.status).toBe(429);
      expect(limited.body.code).toBe("resource_exhausted");
      const retry = limited.body.details.find((d: { type: string }) => d.type === "google.rpc.RetryInfo");
      const delay = fromBinary(RetryInfoSchema, Buffer.from(retry.value, "base64")).retryDelay!;
      expect(Number(delay.seconds)).toBeGreaterThan(0);
      expect(Number(delay.seconds)).toBeLessThanOrEqual(30);
    }
    // The documented REST route says when to come back.
    const rest = await postJson(server.url, "/auth/login/code", { username: "known@example.com", orgId });
    expect(rest.status).toBe(429);
    expect(Number(rest.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(rest.body.error.reason).toBe("RATE_LIMITED");
  });

  it("answer resource_exhausted over gRPC too", async () => {
    const login = grpcClient(LoginService, server.url);
    expect((await login.call("sendLoginCode", { username: "grpc@example.com", orgId })).ok).toBe(true);
    const limited = await login.call("sendLoginCode", { username: "grpc@example.com", orgId });
    login.close();
    expect(limited.ok).toBe(false);
    if (!limited.ok) expect(limited.error.code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it("count a username however it is written: case and spaces around it make no other window", async () => {
    expect((await send(server, "Spelled@Example.com")).status).toBe(200);
    for (const spelling of ["spelled@example.com", "SPELLED@EXAMPLE.COM", "  spelled@example.com "]) expect((await send(server, spelling)).status, spelling).toBe(429);
  });

  it("allow 1 per 30 s and 5 per hour", async () => {
    const user = "hourly@example.com";
    for (let i = 0; i < 5; i++) {
      expect((await send(server, user)).status, `send ${i}`).toBe(200);
      clock.advance(31_000);
    }
    expect((await send(server, user)).status).toBe(429);
    clock.advance(3_600_000);
    expect((await send(server, user)).status).toBe(200);
  });

  it("count a send one window refused in none of the others: refused sends do not spend the owner's hour", async () => {
    const user = "spent@example.com";
    expect((await send(server, user)).status).toBe(200);
    // Refused by the 30 s window; counted in the hour's, they would fill it (5).
    for (let i = 0; i < 6; i++) expect((await send(server, user)).status, `send ${i}`).toBe(429);
    clock.advance(30_000);
    expect((await send(server, user)).status).toBe(200);
  });

  it("answer sends to an unknown organization as to a real one: refused ones spend no other window there either", async () => {
    const unknownOrg = "or-zzzzz-zzzzz-zzzzzzzzzzzzzzzz";
    const waits: Record<string, (string | null)[]> = {};
    for (const org of [orgId, unknownOrg]) {
      const answers = [];
      for (let i = 0; i < 7; i++) answers.push(await postJson(server.url, "/auth/login/code", { username: "who@example.com", orgId: org }));
      expect(answers.map((a) => a.status), org).toEqual([200, 429, 429, 429, 429, 429, 429]);
      // Counted in the hour's window as well, the sixth and seventh would be told to wait for the hour's end.
      waits[org] = answers.map((a) => a.headers.get("retry-after"));
    }
    expect(waits[unknownOrg]).toEqual(waits[orgId]);
    expect(Math.max(...waits[orgId].slice(1).map(Number))).toBeLessThanOrEqual(30);
  });

  /**
   * Five sends at once for a user whose hour's counter the test holds: all pass the check of their windows,
   * then count one after another; the 30 s window lets one through. Answers their statuses and the hour's hits.
   */
  async function racedSends(user: string, db: pg.Client, org = orgId): Promise<{ statuses: number[]; hourlyHits: number }> {
    expect((await send(server, user, org)).status).toBe(200);
    clock.advance(30_000); // a fresh 30 s window: every window is under its maximum for the sends below
    const hourly = `%:${user}|3600000`;
    const holder = new pg.Client(server.app.config.databaseUrl!);
    await holder.connect();
    try {
      await holder.query("begin");
      const locked = await holder.query(`select hits from rate_limit where org_id = $1 and key like $2 for update`, [org, hourly]);
      expect(locked.rows).toEqual([{ hits: 1 }]);
      const answers = Promise.all(Array.from({ length: 5 }, () => send(server, user, org)));
      await waitingOnLocks(db, 5);
      await holder.query("commit");
      const statuses = (await answers).map((a) => a.status).sort();
      const { rows } = await db.query(`select hits from rate_limit where org_id = $1 and key like $2`, [org, hourly]);
      return { statuses, hourlyHits: rows[0].hits };
    } finally {
      await holder.end();
    }
  }

  it("take back what a send refused by one window counted in the others when it raced past their check", async () => {
    const db = new pg.Client(server.app.config.databaseUrl!);
    await db.connect();
    try {
      // The one let through counts; the four the 30 s window refused take their hits back.
      expect(await racedSends("raced-sends@example.com", db)).toEqual({ statuses: [200, 429, 429, 429, 429], hourlyHits: 2 });
    } finally {
      await db.end();
    }
  });

  // An unknown organization's sends are counted by the rate limiter alone, a known one's in the send's statement.
  it.each(["known", "unknown"] as const)("keep a raced send's refusal when its take-back fails, count the failure in the metrics and say it in the log: %s organization", async (which) => {
    const failures = async () => Number(/^codegate_rate_limit_take_backs_failed_total (\S+)$/m.exec((await server.app.metrics.render()).body)?.[1]);
    const before = await failures();
    // Each failure is said too, with the database's reason.
    const said = () => server.logs.filter((l) => l.includes("could not be taken back") && l.includes("the test refuses take-backs")).length;
    const saidBefore = said();
    const db = new pg.Client(server.app.config.databaseUrl!);
    await db.connect();
    try {
      // The database refuses every take-back (a counter going down) while the trigger is there.
      await db.query(`create or replace function refuse_take_back() returns trigger language plpgsql as $$ begin
        if new.hits < old.hits then raise exception 'the test refuses take-backs'; end if; return new; end $$`);
      await db.query(`create trigger refuse_take_back before update on rate_limit for each row execute function refuse_take_back()`);
      // Refused all the same; their hits stay counted in the hour's window until it ends.
      const org = which === "known" ? orgId : "or-zzzzz-zzzzz-zzzzzzzzzzzzzzzy";
      expect(await racedSends(`raced-sends-kept@example.com`, db, org)).toEqual({ statuses: [200, 429, 429, 429, 429], hourlyHits: 6 });
      expect((await failures()) - before).toBe(4);
      expect(said() - saidBefore).toBe(4);
    } finally {
      await db.query(`drop trigger if exists refuse_take_back on rate_limit; drop function if exists refuse_take_back()`);
      await db.end();
    }
  });

  it("hold across server instances, because they live in PostgreSQL", async () => {
    const other = await startTestServer({ ...LIMITS, DATABASE_URL: server.databaseUrl, SMTP_URL: smtp.url }, { clock });
    servers.push(other);
    expect((await send(server, "shared@example.com")).status).toBe(200);
    expect((await send(other, "shared@example.com")).status).toBe(429);
  });

  it("take the organization's overrides", async () => {
    const fx = adminFixtures(server.url);
    const strict = await fx.org("Strict", { rateLimits: { sendPerUsername: [{ max: 3, window: { seconds: 3600n } }] } });
    fx.close();
    for (let i = 0; i < 3; i++) expect((await send(server, "o@example.com", strict.id)).status).toBe(200);
    expect((await send(server, "o@example.com", strict.id)).status).toBe(429);
  });
});

describe("requests past a limit", () => {
  it("read the window's counter and leave it as it was: no write, so a flood waits on no row lock", async () => {
    const fx = adminFixtures(server.url);
    await fx.identity(orgId, "flood@example.com");
    fx.close();
    const db = new pg.Client(server.app.config.databaseUrl!);
    await db.connect();
    try {
      // 1 per 30 s and 5 per hour: the second send and those after it are over the 30 s window.
      const counters = async () =>
        (
          await db.query(
            `select extract(epoch from expires_at - window_start)::int as seconds, hits, xmin::text as version from rate_limit where org_id = $1 and key like 'send:%flood@example.com%' order by 1`,
            [orgId],
          )
        ).rows;
      expect((await send(server, "flood@example.com")).status).toBe(200);
      const [first30s, first1h] = await counters();
      expect([first30s.seconds, first30s.hits, first1h.seconds, first1h.hits]).toEqual([30, 1, 3600, 1]);
      for (let i = 0; i < 3; i++) expect((await send(server, "flood@example.com")).status).toBe(429);
      const [then30s, then1h] = await counters();
      // The window that refused them: untouched, the same row version; and the hour's, not over, too:
      // a send one window refused spends none of the others.
      expect(then30s).toEqual(first30s);
      expect(then1h).toEqual(first1h);
      // And none of them issued a code or queued a mail: the first send's are all there are.
      const issued = await db.query(
        `select (select count(*)::int from code c join identity i on i.org_id = c.org_id and i.id = c.identity_id where c.org_id = $1 and i.username_normalized = $2) as codes,
           (select count(*)::int from courier_message where org_id = $1 and recipient = $2) as mails`,
        [orgId, "flood@example.com"],
      );
      expect(issued.rows[0]).toEqual({ codes: 1, mails: 1 });
      // Refused until the 30 s window ends.
      clock.advance(30_000);
      expect((await send(server, "flood@example.com")).status).toBe(200);
    } finally {
      await db.end();
    }
  });

  it("of wrong guesses from one address leave its counter as it was too", async () => {
    const s = await startTestServer(
      { SMTP_URL: smtp.url, RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "off", RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "3/1h", MAX_GUESS_CHANCE: "1" },
      { clock: new ManualClock(new Date("2026-12-01T00:00:05Z")) },
    );
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = (await fx.org("Guessed from one address")).id;
    await fx.identity(org, "target@example.com");
    fx.close();
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "target@example.com", orgId: org })).status).toBe(200);
    const guess = () => postJson(s.url, "/codegate.v1.LoginService/VerifyLoginCode", { username: "target@example.com", orgId: org, code: "0000000" });
    const db = new pg.Client(s.app.config.databaseUrl!);
    await db.connect();
    try {
      const state = async () => ({
        counters: (await db.query(`select key, hits, xmin::text as version from rate_limit where org_id = $1 and key like 'failed-from:%'`, [org])).rows,
        attempts: (await db.query(`select attempts from code where org_id = $1`, [org])).rows.map((r) => r.attempts),
      });
      for (let i = 0; i < 3; i++) expect((await guess()).status).toBe(401);
      const atLimit = await state();
      expect(atLimit.counters.map((c) => c.hits)).toEqual([3]);
      expect(atLimit.attempts).toEqual([3]);
      for (let i = 0; i < 3; i++) expect((await guess()).status).toBe(429);
      // No attempt, no count, no new row version.
      expect(await state()).toEqual(atLimit);
    } finally {
      await db.end();
    }
  });
});

describe("send limits per client address", () => {
  it("count the socket's address, and X-Forwarded-For only from a trusted proxy", async () => {
    const env = { ...LIMITS, RATE_LIMIT_SEND_PER_ADDRESS: "3/1m", SMTP_URL: smtp.url };
    const direct = await startTestServer(env, { clock });
    servers.push(direct);
    const fx = adminFixtures(direct.url);
    const org = (await fx.org("Addresses")).id;
    fx.close();
    for (let i = 0; i < 3; i++) expect((await send(direct, `a${i}@example.com`, org, { "x-forwarded-for": `10.0.0.${i}` })).status).toBe(200);
    // Not trusted: the header is ignored and the socket's address is over its limit.
    expect((await send(direct, "a9@example.com", org, { "x-forwarded-for": "10.0.0.99" })).status).toBe(429);

    const proxied = await startTestServer({ ...env, DATABASE_URL: await freshDatabase(), TRUSTED_PROXIES: "127.0.0.1" }, { clock });
    servers.push(proxied);
    const fx2 = adminFixtures(proxied.url);
    const org2 = (await fx2.org("Behind a proxy")).id;
    fx2.close();
    for (let i = 0; i < 5; i++) expect((await send(proxied, `p${i}@example.com`, org2, { "x-forwarded-for": `203.0.113.${i}` })).status).toBe(200);
    for (let i = 0; i < 3; i++) await send(proxied, `q${i}@example.com`, org2, { "x-forwarded-for": "198.51.100.7, 127.0.0.1" });
    expect((await send(proxied, "q9@example.com", org2, { "x-forwarded-for": "198.51.100.7" })).status).toBe(429);
  });
});

describe("wrong guesses per username over time", () => {
  it("stop 'ask for a new code and guess again' at the daily limit: past it a code takes its first attempt only, so the owner's fresh code still works", async () => {
    let wrongGuesses = 0;
    // 12 per day here: new codes do not reset the count.
    for (let round = 0; round < 3; round++) {
      clock.advance(31_000);
      expect((await send(server, "guessed@example.com")).status).toBe(200);
      const code = codeFrom(await smtp.nextMailTo("guessed@example.com", round));
      const wrong = code === "000000" ? "111111" : "000000";
      for (let i = 0; i < 4; i++) {
        const r = await verify("guessed@example.com", wrong);
        wrongGuesses++;
        expect(r.status).toBe(401);
      }
      if (round === 2) {
        expect(wrongGuesses).toBe(12);
        // The code that took wrong guesses takes no more, the right one included. The answer is the one
        // invalid-code error, not a 429: only live codes count, so a 429 would tell that the account exists.
        const blocked = await verify("guessed@example.com", code);
        expect(blocked.status).toBe(401);
        expect(blocked.body.code).toBe("unauthenticated");
        // A fresh code takes one attempt: a wrong guess ends it...
        clock.advance(31_000);
        await send(server, "guessed@example.com");
        const guessedAt = codeFrom(await smtp.nextMailTo("guessed@example.com", 3));
        expect((await verify("guessed@example.com", guessedAt === "000000" ? "111111" : "000000")).status).toBe(401);
        expect((await verify("guessed@example.com", guessedAt)).status).toBe(401);
        // ...and the owner, who reads the mail, gets in with the next one.
        clock.advance(31_000);
        await send(server, "guessed@example.com");
        const fresh = codeFrom(await smtp.nextMailTo("guessed@example.com", 4));
        expect((await verify("guessed@example.com", fresh)).status).toBe(200);
      }
    }
  });
});

/**
 * Twenty wrong guesses, five at each of an account's four live codes (one unbound,
 * three bound to the application's flows), sent at once and held until all have
 * started (the codes' rows are locked here meanwhile); answers the attempts the
 * codes took.
 */
async function racedGuesses(env: Record<string, string>, name: string): Promise<number> {
  const s = await startTestServer(
    { SMTP_URL: smtp.url, RATE_LIMIT_SEND_PER_USERNAME: "100/1h", MAX_GUESS_CHANCE: "1", DATABASE_POOL_SIZE: "30", ...env },
    { clock: new ManualClock(new Date("2026-12-01T00:00:05Z")) },
  );
  servers.push(s);
  const fx = adminFixtures(s.url);
  const org = (await fx.org(name)).id;
  await fx.identity(org, "raced@example.com");
  fx.close();
  const bindings = ["", "flow-a-0123456789abcdef", "flow-b-0123456789abcdef", "flow-c-0123456789abcdef"];
  for (const binding of bindings) {
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "raced@example.com", orgId: org, binding })).status).toBe(200);
  }
  const db = new pg.Client(s.app.config.databaseUrl!);
  const holder = new pg.Client(s.app.config.databaseUrl!);
  await db.connect();
  await holder.connect();
  try {
    expect((await db.query(`select count(*)::int as n from code where org_id = $1 and dead_at is null`, [org])).rows[0].n).toBe(4);
    await holder.query("begin");
    await holder.query(`select 1 from code where org_id = $1 and dead_at is null for update`, [org]);
    // A code has six digits: seven zeros match none.
    const answers = Promise.all(
      bindings.flatMap((binding) =>
        Array.from({ length: 5 }, () => postJson(s.url, "/codegate.v1.LoginService/VerifyLoginCode", { username: "raced@example.com", orgId: org, code: "0000000", binding })),
      ),
    );
    await waitingOnLocks(db, 20);
    await holder.query("commit");
    expect((await answers).filter((a) => a.status !== 401 && a.status !== 429)).toEqual([]);
    return (await db.query(`select coalesce(sum(attempts), 0)::int as attempts from code where org_id = $1`, [org])).rows[0].attempts;
  } finally {
    await holder.end();
    await db.end();
  }
}

describe("the wrong-guess limits under concurrent guesses", () => {
  it("hold per username: guesses sent at once at all of an account's live codes take no more attempts than one after another would", async () => {
    // No per-address limit: the guesses could come from as many addresses, and the username's limit alone decides them.
    const attempts = await racedGuesses({ RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "3/24h", RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "off" }, "Raced");
    // One after another: 3 counted wrong guesses, then only each untouched code's first attempt: at most 3 + 3.
    expect(attempts).toBeLessThanOrEqual(6);
  });

  it("hold per client address: past its limit an address gets no attempt at all", async () => {
    const attempts = await racedGuesses({ RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME: "off", RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "3/1h" }, "Raced from one address");
    expect(attempts).toBe(3);
  });
});

describe("wrong-guess limits stored with two limits of one window", () => {
  it("count every wrong guess under the smaller one: as two counters of one row they failed the count, and wrong guesses went through uncounted", async () => {
    // The API refuses such settings now (each window length once); an organization's stored before may hold them.
    const doubled = "or-dbl00-dbl00-doubledwindows0";
    const db = new pg.Client(server.app.config.databaseUrl!);
    await db.connect();
    try {
      await db.query(`insert into organization (id, tenant_id, name, settings, created_at) values ($1, $1, 'Doubled', $2::jsonb, now())`, [
        doubled,
        JSON.stringify({ rateLimits: { verifyFailuresPerUsername: [{ max: 3, window: "86400s" }, { max: 100, window: "86400s" }] } }),
      ]);
      await db.query(
        `insert into identity (org_id, id, username, username_normalized, state, created_at) values ($1, gen_random_uuid(), 'doubled@example.com', 'doubled@example.com', 'active', now())`,
        [doubled],
      );
      expect((await send(server, "doubled@example.com", doubled)).status).toBe(200);
      const code = codeFrom(await smtp.nextMailTo("doubled@example.com"));
      const guess = (c: string) => postJson(server.url, "/codegate.v1.LoginService/VerifyLoginCode", { username: "doubled@example.com", orgId: doubled, code: c });
      const wrong = code === "000000" ? "111111" : "000000";
      for (let i = 0; i < 3; i++) expect((await guess(wrong)).status).toBe(401);
      // Three wrong guesses reach the limit of 3: the right code no longer gets an attempt.
      expect((await guess(code)).status).toBe(401);
      const { rows } = await db.query(`select key, hits from rate_limit where org_id = $1 and key like 'failed:%'`, [doubled]);
      expect(rows.map((r) => r.hits)).toEqual([3]);
    } finally {
      await db.end();
    }
  });

  it("are refused by the API, naming the field", async () => {
    const admin = bearer(ADMIN_TOKEN);
    const update = (rateLimits: object) => postJson(server.url, "/codegate.v1.AdminService/UpdateOrganizationSettings", { orgId, settings: { rateLimits } }, admin);
    const twice = await update({ verifyFailuresPerUsername: [{ max: 3, window: "86400s" }, { max: 100, window: "86400s" }] });
    expect(twice.status).toBe(400);
    expect(twice.body.message).toMatch(/verify_failures_per_username.*each window length at most once/);
    const huge = await update({ sendPerAddress: [{ max: 2147483648, window: "60s" }] });
    expect(huge.status).toBe(400);
    expect(huge.body.message).toMatch(/send_per_address\[0\]\.max/);
  });
});

describe("deadlines", () => {
  it("end an RPC that takes too long with deadline_exceeded, and the server goes on", async () => {
    // The bound covers the whole call, the admin check included: 1 s leaves room for a loaded machine.
    const s = await startTestServer({ RPC_TIMEOUT: "1s", RATE_LIMIT_SEND_PER_USERNAME: "off" });
    servers.push(s);
    const fx = adminFixtures(s.url);
    const org = await fx.org("Slow");
    await fx.identity(org.id, "stuck@example.com");
    fx.close();
    const sendStuck = () => postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "stuck@example.com", orgId: org.id });
    expect((await sendStuck()).status).toBe(200);
    // Another session holds the live code's row: the next send waits on its lock.
    const db = new pg.Client({ connectionString: s.databaseUrl });
    await db.connect();
    await db.query("begin");
    await db.query("select * from code where dead_at is null for update");
    const started = Date.now();
    const stuck = await sendStuck();
    const took = Date.now() - started;
    await db.query("rollback");
    await db.end();
    expect(stuck.status).toBe(504);
    expect(stuck.body.code).toBe("deadline_exceeded");
    expect(took).toBeLessThan(5_000);
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "other@example.com", orgId: org.id })).status).toBe(200);
    // A client that allows more time than the server's bound is served, within the bound.
    const patient = await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "patient@example.com", orgId: org.id }, { "connect-timeout-ms": "60000" });
    expect(patient.status).toBe(200);
  });
});

describe("slow clients", () => {
  it("are disconnected when their request head does not arrive in time", async () => {
    const s = await startTestServer({ HEADERS_TIMEOUT: "500ms" });
    servers.push(s);
    const port = new URL(s.url).port;
    const closedAfter = await new Promise<number>((resolve) => {
      const started = Date.now();
      const socket = connect(Number(port), "127.0.0.1", () => socket.write("POST /codegate.v1.LoginService/SendLoginCode HTTP/1.1\r\nHost: x\r\n"));
      socket.on("data", () => {});
      socket.on("close", () => resolve(Date.now() - started));
      socket.on("error", () => {});
    });
    expect(closedAfter).toBeLessThan(5_000);
    // And the server still serves others.
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "x@example.com", orgId: "or-aaaaa-bbbbb-cccccccccccccccc" })).status).toBe(200);
  });

  it("are disconnected when the HTTP/2 preface trickles in a byte at a time", async () => {
    const s = await startTestServer({ HEADERS_TIMEOUT: "500ms" });
    servers.push(s);
    const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let sent = 0;
    const socket = connect(Number(new URL(s.url).port), "127.0.0.1");
    socket.on("error", () => {});
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    // A byte every 100 ms: an idle timeout of 500 ms, started again by each byte, never fires.
    const trickle = setInterval(() => sent < preface.length && socket.write(preface.subarray(sent, ++sent)), 100);
    await closed;
    clearInterval(trickle);
    expect(sent).toBeLessThan(preface.length);
    expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "x@example.com", orgId: "or-aaaaa-bbbbb-cccccccccccccccc" })).status).toBe(200);
  });
});
