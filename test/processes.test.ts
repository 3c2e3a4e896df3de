// The server as an operator runs it: separate processes, SIGTERM under load,
// a courier worker, pruning.
import { afterAll, describe, expect, it, vi } from "vitest";
import { execFileSync, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { freshDatabase } from "./support/server.ts";
import { commandEnv, startCommand } from "./support/process.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { freePort } from "./support/net.ts";
import { SmtpSink } from "./support/smtp.ts";

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function baseEnv(databaseUrl: string, extra: Record<string, string> = {}) {
  const { env, cleanup } = commandEnv(databaseUrl, extra);
  cleanups.push(cleanup);
  return env;
}

function start(command: string, env: NodeJS.ProcessEnv) {
  const started = startCommand(command, env);
  cleanups.push(() => started.kill());
  return started;
}

/** Resolves once the server at `url` answers its liveness check. */
async function waitHealthy(url: string, child: ChildProcess): Promise<void> {
  await vi.waitFor(
    async () => {
      expect(child.exitCode, "the server exited").toBeNull();
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
    },
    { timeout: 20_000, interval: 50 },
  );
}

describe("processes", () => {
  it("serve (two API workers and a courier worker) exits 0 on SIGTERM under load; every answered send is kept and no claimed mail stays stuck; a courier worker delivers the rest", async () => {
    const smtp = await SmtpSink.create();
    cleanups.push(() => smtp.stop());
    const databaseUrl = await freshDatabase({ empty: true }); // the primary migrates it before its workers start
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const serverEnv = baseEnv(databaseUrl, { PORT: String(port), SMTP_URL: smtp.url, SHUTDOWN_GRACE: "5s", WORKERS: "2" });
    const server = start("serve", serverEnv);
    await waitHealthy(url, server.child);
    const fx = adminFixtures(url);
    const org = await fx.org("Shutdown");
    const users = Array.from({ length: 40 }, (_, i) => `s${i}@example.com`);
    await Promise.all(users.map((u) => fx.identity(org.id, u)));
    fx.close();

    let answered = 0;
    let failedAnswers = 0;
    let refused = 0;
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        try {
          const res = await fetch(`${url}/codegate.v1.LoginService/SendLoginCode`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ username: users[(w * 7 + i) % users.length], orgId: org.id }),
          });
          await res.text();
          if (res.status === 200) answered++;
          else failedAnswers++;
        } catch {
          // No answer at all: the client knows it was not served. The server refuses
          // connections once it is shutting down: this worker is done when it has exited.
          refused++;
          await server.exited;
          return;
        }
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
    // Under load: the signal comes once the server has answered a good number of sends.
    await vi.waitUntil(() => answered > 20 || server.child.exitCode !== null, { timeout: 30_000, interval: 10 });
    const answeredBeforeSignal = answered;
    server.child.kill("SIGTERM");
    const exitCode = await server.exited;
    stop = true;
    await load;

    expect(exitCode).toBe(0);
    expect(answeredBeforeSignal).toBeGreaterThan(20);
    expect(failedAnswers).toBe(0);
    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    cleanups.push(() => db.end());
    const [{ mails, stuck }] = (
      await db.query(
        `select count(*)::int as mails, count(*) filter (where status = 'queued' and claimed_until is not null)::int as stuck from courier_message`,
      )
    ).rows;
    expect(mails).toBe(answered);
    expect(stuck).toBe(0);

    // What the server had not delivered yet, a courier worker does.
    // Same DATA_DIR: the worker needs the generated mail keys to read the queued bodies.
    const courier = start("courier", { ...serverEnv, PORT: "0", COURIER_POLL_INTERVAL: "100ms" });
    await smtp.waitFor((m) => m.length >= answered, 30_000);
    // The outbox says every mail is sent...
    await vi.waitFor(
      async () => expect((await db.query(`select count(*) filter (where status <> 'sent')::int as unsent from courier_message`)).rows[0].unsent).toBe(0),
      { timeout: 10_000, interval: 20 },
    );
    // ...and once the worker has stopped (it finishes the batch in hand first), nothing
    // more can arrive: a duplicate would be here by now.
    courier.child.kill("SIGTERM");
    expect(await courier.exited).toBe(0);
    expect(smtp.mails).toHaveLength(answered);
    expect(new Set(smtp.mails.map((m) => m.messageId)).size).toBe(answered);
  });

  it("prune deletes dead codes, old sent mail metadata and ended rate-limit windows, and keeps the rest", async () => {
    const databaseUrl = await freshDatabase();
    const env = baseEnv(databaseUrl, { RETENTION_PERIOD: "1h" });
    execFileSync(process.execPath, ["src/main.ts", "migrate"], { env });
    const db = new pg.Client({ connectionString: databaseUrl });
    await db.connect();
    cleanups.push(() => db.end());
    const org = "or-aaaaa-bbbbb-cccccccccccccccc";
    const code = (dead: string | null, expires: string) =>
      db.query(
        `insert into code (org_id, id, identity_id, purpose, code_hash, key_id, created_at, expires_at, max_attempts, dead_at)
         values ($1, $2, $3, 'login', '\\x00', 'k', now() - interval '3 days', now() + $4::interval, 5, now() - $5::interval)`,
        [org, randomUUID(), randomUUID(), expires, dead],
      );
    await code("2 hours", "-1 day"); // dead long ago: pruned
    await code("10 minutes", "10 minutes"); // dead recently: kept for now
    await code(null, "-2 hours"); // expired long ago, never used: pruned
    await code(null, "10 minutes"); // live: kept
    const mail = (status: string, age: string) =>
      db.query(
        `insert into courier_message (org_id, id, purpose, recipient, subject, key_id, status, next_attempt_at, created_at, updated_at)
         values ($1, $2, 'login', 'x@example.com', 's', 'k', $3, now(), now() - $4::interval, now() - $4::interval)`,
        [org, randomUUID(), status, age],
      );
    await mail("sent", "2 hours");
    await mail("abandoned", "2 hours");
    await mail("sent", "1 minute");
    await mail("queued", "2 hours");
    await db.query(
      `insert into rate_limit (org_id, key, window_start, hits, expires_at) values ($1, 'a', now() - interval '2 minutes', 1, now() - interval '1 minute'), ($1, 'b', now(), 1, now() + interval '1 minute')`,
      [org],
    );
    const out = execFileSync(process.execPath, ["src/main.ts", "prune"], { env, encoding: "utf8" });
    expect(out).toContain("pruned 2 codes, 2 mails, 1 rate-limit windows");
    const left = (await db.query(`select (select count(*) from code)::int as codes, (select count(*) from courier_message)::int as mails, (select count(*) from rate_limit)::int as limits`)).rows[0];
    expect(left).toEqual({ codes: 2, mails: 2, limits: 1 });
  });
});
