// What the hostile-traffic tests share (test/hostile-*.test.ts): a server process
// with a short RPC_TIMEOUT, mail to an SMTP sink in the test process, and the check
// every hostile test ends with: past the deadline of whatever it sent, the same
// process still logs a user in and nothing went unhandled.
import { randomUUID } from "node:crypto";
import { expect } from "vitest";
import { postJson } from "./clients.ts";
import { adminFixtures } from "./fixtures.ts";
import { pastDeadline, startServerProcess, type ServerProcess } from "./process.ts";
import { codeFrom, SmtpSink } from "./smtp.ts";

export const RPC_TIMEOUT_MS = 1_500;
export const LOGIN = "/codegate.v1.LoginService/SendLoginCode";
export const VERIFY = "/codegate.v1.LoginService/VerifyLoginCode";

export interface Hostile {
  smtp: SmtpSink;
  /** A server process with an organization and the active identity owner@example.com. */
  serverWith(env?: Record<string, string>): Promise<{ server: ServerProcess; orgId: string }>;
  /** The same process, past the deadline of whatever was sent, still logs a user in; nothing went unhandled. */
  stillServes(server: ServerProcess, orgId: string): Promise<void>;
  close(): Promise<void>;
}

export async function hostileSetup(): Promise<Hostile> {
  const smtp = await SmtpSink.create();
  const cleanups: (() => unknown)[] = [];
  return {
    smtp,
    async serverWith(env = {}) {
      const server = await startServerProcess({ RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms`, SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms", ...env });
      cleanups.push(() => server.stop());
      const fx = adminFixtures(server.url);
      const orgId = (await fx.org("Hostile")).id;
      await fx.identity(orgId, "owner@example.com");
      fx.close();
      return { server, orgId };
    },
    async stillServes(server, orgId) {
      await pastDeadline(RPC_TIMEOUT_MS + 500);
      expect(server.alive(), server.stderr.join("")).toBe(true);
      // An account of its own, so that checks running at once never take each other's codes.
      const username = `alive-${randomUUID()}@example.com`;
      const fx = adminFixtures(server.url);
      await fx.identity(orgId, username);
      fx.close();
      expect((await postJson(server.url, LOGIN, { username, orgId })).status).toBe(200);
      const code = codeFrom(await smtp.nextMailTo(username));
      const verified = await postJson(server.url, VERIFY, { username, orgId, code });
      expect(verified.status).toBe(200);
      expect(verified.body.token).toBeTruthy();
      expect(server.logs.filter((l) => /unhandled|uncaught/.test(l.msg))).toEqual([]);
      const metrics = await (await fetch(`${server.opsUrl}/metrics`)).text();
      expect(metrics).toMatch(/^codegate_process_errors_total\{kind="unhandled_rejection"\} 0$/m);
      expect(metrics).toMatch(/^codegate_process_errors_total\{kind="uncaught_exception"\} 0$/m);
    },
    async close() {
      for (const c of cleanups.reverse()) await c();
      await smtp.stop();
    },
  };
}
