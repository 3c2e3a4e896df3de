// A courier in a process of its own (`codegate courier`, or the courier worker of
// `serve`) sends the mail that a server without a courier queued at once, not at its
// next poll: the server announces it (NOTIFY, rules/courier/announcer.ts) and the
// sleeping courier hears it (store/mail-queued.ts), also after its listening
// connection broke. Its poll interval here is a minute: a mail that waited for it
// would not arrive within the test's bounds.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import pg from "pg";
import { MAIL_QUEUED_CHANNEL } from "../src/store/mail-queued.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { ADMIN_TOKEN, DEPLOYMENT_ENV, startTestServer, TEST_LIMITS } from "./support/server.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** Bounds for the mail's arrival: far below the courier's poll interval. */
const SOON_MS = 10_000;

function startCourier(databaseUrl: string, smtpUrl: string): { child: ChildProcess; exited: Promise<number | null> } {
  const dataDir = mkdtempSync(join(tmpdir(), "codegate-courier-"));
  const child = spawn(process.execPath, ["src/main.ts", "courier"], {
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      SMTP_URL: smtpUrl,
      COURIER_POLL_INTERVAL: "60s",
      DATA_DIR: dataDir,
      HOST: "127.0.0.1",
      OPS_PORT: "0",
      ADMIN_TOKEN,
      LOG_LEVEL: "warn",
      ...DEPLOYMENT_ENV,
      ...TEST_LIMITS,
    },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    await exited;
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { child, exited };
}

describe("a courier in a process of its own", () => {
  it("sends mail queued while it waits out its poll interval at once, woken by the server that queued it, also after its listening connection broke", async () => {
    const smtp = await SmtpSink.create();
    cleanups.push(() => smtp.stop());
    const server = await startTestServer({ COURIER_ENABLED: "false" });
    cleanups.push(() => server.close());
    const db = new pg.Client(server.databaseUrl);
    await db.connect();
    cleanups.push(() => db.end());
    const fx = adminFixtures(server.url);
    const org = await fx.org("Woken");
    await fx.identity(org.id, "woken@example.com");
    fx.close();

    const courier = startCourier(server.databaseUrl, smtp.url);
    /** The courier's connection listening for queued mail (by its statement, the connection's last). */
    const listener = async () =>
      (await db.query<{ pid: number }>(`select pid from pg_stat_activity where datname = current_database() and query = $1`, [`listen ${MAIL_QUEUED_CHANNEL}`])).rows;
    /** The courier asleep: it listens, and a connection of its pool last ran its look for due mail, on a queue with none. */
    const asleep = () =>
      vi.waitFor(
        async () => {
          expect(courier.child.exitCode, "the courier exited").toBeNull();
          expect(await listener()).toHaveLength(1);
          const looked = await db.query(`select 1 from pg_stat_activity where datname = current_database() and state = 'idle' and query ~ '^\\s*select org_id from courier_message'`);
          expect(looked.rowCount).toBe(1);
        },
        { timeout: 20_000, interval: 50 },
      );
    const send = async () => {
      const res = await fetch(`${server.url}/codegate.v1.LoginService/SendLoginCode`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "woken@example.com", orgId: org.id }),
      });
      expect(res.status).toBe(200);
    };

    await asleep();
    await send();
    const first = await smtp.nextMailTo("woken@example.com", 0, SOON_MS);
    expect(codeFrom(first)).toMatch(/^\d{6}$/);

    // Its listening connection broken, the courier listens again on a new one; what it missed, it looks for.
    const [{ pid }] = await listener();
    await db.query("select pg_terminate_backend($1)", [pid]);
    await vi.waitFor(async () => expect((await listener()).map((l) => l.pid)).toEqual([expect.not.toSatisfy((p: number) => p === pid)]), { timeout: 20_000, interval: 50 });
    await asleep();
    await send();
    const second = await smtp.nextMailTo("woken@example.com", 1, SOON_MS);
    expect(codeFrom(second)).not.toBe(codeFrom(first));

    courier.child.kill("SIGTERM");
    expect(await courier.exited).toBe(0);
  });
});
