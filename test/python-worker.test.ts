// The example delivery worker (clients/python/delivery_worker.py) against the live
// server over gRPC, end to end: an SMS-channel organization's login send is
// claimed by the worker, "delivered" into a file this test reads, and acked; a
// refused delivery is failed, retried and abandoned, one that can never succeed at once; a worker that dies before its
// ack sees the message again, with the same id, once the lease has lapsed, and does
// not deliver it twice. Stubs generated from proto/ with protoc and Debian's
// grpc_python_plugin (test/support/python.ts). The server runs on a ManualClock:
// leases and backoffs pass when the test moves it.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { DeliveryChannel, IdentityState } from "@codegate/client/node";
import { ManualClock } from "../src/domain/clock.ts";
import { createAdminToken } from "../src/rules/admin-tokens.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { PYTHON, PYTHON_CLIENT, pythonSkipReason } from "./support/python.ts";

const reason = pythonSkipReason("python delivery worker");

interface Delivered {
  id: string;
  org_id: string;
  channel: string;
  purpose: string;
  recipient: string;
  attempt: number;
  text: string;
}

describe.skipIf(reason !== undefined)(`the Python delivery worker over gRPC${reason ? ` (skipped: ${reason})` : ""}`, () => {
  const clock = new ManualClock();
  let server: TestServer;
  let fx: ReturnType<typeof adminFixtures>;
  let dir: string;
  let stubs: string;
  /** The worker's token, as the README says to make it: DeliveryService only. */
  let deliveryToken: string;

  /** Runs the worker until it is idle; answers its exit code and output. */
  const worker = (args: string[], token = deliveryToken) => startWorker(["--until-idle", ...args], token).ended;

  /** Starts the worker; `ended` answers its exit code and output. */
  function startWorker(args: string[], token = deliveryToken) {
    const child = spawn(PYTHON, [join(PYTHON_CLIENT, "delivery_worker.py"), ...args], {
      env: { PATH: process.env.PATH ?? "", PYTHONPATH: stubs, CODEGATE_SERVER: new URL(server.url).host, CODEGATE_ADMIN_TOKEN: token },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const killer = setTimeout(() => child.kill(), 30_000);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const ended = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      child.on("close", (code) => {
        clearTimeout(killer);
        resolve({ code, stdout, stderr });
      }),
    );
    return { child, ended };
  }

  const delivered = (file: string): Delivered[] =>
    existsSync(file)
      ? readFileSync(file, "utf8")
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l))
      : [];

  const rowTo = async (recipient: string) => {
    const rows = await server.app.orm.em
      .getConnection()
      .execute("select id, status, send_count, last_error, body, lease_token from courier_message where recipient = ?", [recipient]);
    expect(rows).toHaveLength(1);
    return rows[0] as { id: string; status: string; send_count: number; last_error: string | null; body: Buffer | null; lease_token: string | null };
  };

  /** An SMS-channel organization and an active identity with this phone number; answers the organization's id. */
  async function smsIdentity(name: string, username: string, phoneNumber: string): Promise<string> {
    const org = await fx.org(name, { delivery: { login: DeliveryChannel.SMS } });
    const created = (await fx.clients.admin.createIdentity({ orgId: org.id, username, phoneNumber, skipRegistrationCode: true })).identity!;
    await fx.clients.admin.setIdentityState({ identityId: created.id, state: IdentityState.ACTIVE });
    return org.id;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "codegate-worker-"));
    stubs = join(dir, "stubs");
    const gen = spawnSync("bash", [join(PYTHON_CLIENT, "generate.sh"), stubs], { encoding: "utf8" });
    if (gen.status !== 0) throw new Error(`generate.sh failed: ${gen.stderr}`);
    // No SMTP needed: the courier never takes these messages.
    server = await startTestServer({ COURIER_ENABLED: "false", COURIER_MAX_ATTEMPTS: "3", COURIER_BACKOFF_BASE: "1s", COURIER_BACKOFF_MAX: "4s" }, { clock });
    fx = adminFixtures(server.url);
    deliveryToken = (await createAdminToken(server.app.orm, "python worker", new Date(), "delivery")).token;
  });
  afterAll(async () => {
    fx?.close();
    await server?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("delivers an SMS-channel login code: claimed, written, acked; the message is sent, its body wiped, and the code verifies", async () => {
    const orgId = await smsIdentity("Py SMS", "py-sms@example.com", "+41791110001");
    await fx.clients.login.sendLoginCode({ orgId, username: "py-sms@example.com" });
    const file = join(dir, "sent.jsonl");

    const run = await worker(["--channel", "sms", "--deliver-to", file]);
    expect(run.code, run.stderr).toBe(0);
    const row = await rowTo("+41791110001");
    const [sms] = delivered(file);
    expect(delivered(file)).toHaveLength(1);
    expect(sms).toMatchObject({ id: row.id, org_id: orgId, channel: "DELIVERY_CHANNEL_SMS", purpose: "CODE_PURPOSE_LOGIN", recipient: "+41791110001", attempt: 1 });
    expect(sms.text).toMatch(/^\d{6}$/);
    expect(run.stderr).toContain(`delivered ${row.id}`);
    expect(run.stderr).toContain("acked 1 of 1");
    expect(row).toMatchObject({ status: "sent", body: null, send_count: 1, lease_token: null });

    const verified = await fx.clients.login.verifyLoginCode({ orgId, username: "py-sms@example.com", code: sms.text });
    expect(verified.identity?.username).toBe("py-sms@example.com");
  });

  it("fails a refused delivery: retried after the backoff, abandoned after the retry limit, its body wiped", async () => {
    const orgId = await smsIdentity("Py Refused", "py-refused@example.com", "+41791110002");
    await fx.clients.login.sendLoginCode({ orgId, username: "py-refused@example.com" });
    const file = join(dir, "refused.jsonl");
    const expected = ["COURIER_MESSAGE_STATUS_QUEUED", "COURIER_MESSAGE_STATUS_QUEUED", "COURIER_MESSAGE_STATUS_ABANDONED"];
    for (const [i, status] of expected.entries()) {
      const run = await worker(["--channel", "sms", "--deliver-to", file, "--refuse", "+41791110002"]);
      expect(run.code, run.stderr).toBe(0);
      const row = await rowTo("+41791110002");
      expect(run.stderr).toContain(`failed ${row.id}: ${status}`);
      expect(row).toMatchObject({ send_count: i + 1, last_error: "refused by the provider (simulated)", lease_token: null });
      expect({ status: row.status, wiped: row.body === null }).toEqual(i < 2 ? { status: "queued", wiped: false } : { status: "abandoned", wiped: true });
      clock.advance(5_000); // past the longest backoff (4s)
    }
    expect(delivered(file)).toEqual([]);
    // Abandoned: never claimed again.
    const after = await worker(["--channel", "sms", "--deliver-to", file]);
    expect(after.stderr).toBe("idle\n");
  });

  it("fails a delivery for good: abandoned at once, its body wiped, never claimed again", async () => {
    const orgId = await smsIdentity("Py Unknown", "py-unknown@example.com", "+41791110004");
    await fx.clients.login.sendLoginCode({ orgId, username: "py-unknown@example.com" });
    const file = join(dir, "unknown.jsonl");
    const run = await worker(["--channel", "sms", "--deliver-to", file, "--unknown", "+41791110004"]);
    expect(run.code, run.stderr).toBe(0);
    const row = await rowTo("+41791110004");
    expect(run.stderr).toContain(`failed ${row.id}: COURIER_MESSAGE_STATUS_ABANDONED`);
    expect(row).toMatchObject({ status: "abandoned", send_count: 1, last_error: "no such number (simulated)", body: null, lease_token: null });
    clock.advance(3_600_000);
    expect((await worker(["--channel", "sms", "--deliver-to", file])).stderr).toBe("idle\n");
    expect(delivered(file)).toEqual([]);
  });

  it("gets a message again, with the same id, when its lease lapses after a crash before the ack, and does not deliver it twice", async () => {
    const orgId = await smsIdentity("Py Crash", "py-crash@example.com", "+41791110003");
    await fx.clients.login.sendLoginCode({ orgId, username: "py-crash@example.com" });
    const file = join(dir, "crash.jsonl");

    const crashed = await worker(["--channel", "sms", "--deliver-to", file, "--lease", "10", "--exit-before-ack"]);
    expect(crashed.code, crashed.stderr).toBe(0);
    expect(crashed.stderr).toContain("exiting before the ack");
    const held = await rowTo("+41791110003");
    expect(held).toMatchObject({ status: "queued", send_count: 0 });
    expect(held.lease_token).not.toBeNull();
    expect(delivered(file).map((d) => d.id)).toEqual([held.id]);

    // Still leased: nothing for another worker.
    clock.advance(9_000);
    expect((await worker(["--channel", "sms", "--deliver-to", file])).stderr).toBe("idle\n");
    // The lease has lapsed: claimed again, the same id, acked without a second delivery.
    clock.advance(2_000);
    const again = await worker(["--channel", "sms", "--deliver-to", file]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(`already delivered ${held.id}`);
    expect(again.stderr).toContain("acked 1 of 1");
    expect(delivered(file).map((d) => d.id)).toEqual([held.id]);
    // The crashed worker's lapsed lease was an attempt, and the delivery after it another.
    expect(await rowTo("+41791110003")).toMatchObject({ id: held.id, status: "sent", body: null, send_count: 2 });
  });

  it("left running, waits in its claims for a text and delivers it; SIGTERM cancels its waiting claim and it exits cleanly", async () => {
    const orgId = await smsIdentity("Py Waiting", "py-waiting@example.com", "+41791110009");
    const file = join(dir, "waiting.jsonl");
    const running = startWorker(["--channel", "sms", "--deliver-to", file, "--wait", "30"]);
    // Other tests' messages that are due go first; then it waits in its claim (the server counts it).
    await vi.waitFor(() => expect(server.app.deliveryWaits.waiting).toBe(1), { timeout: 20_000 });
    await fx.clients.login.sendLoginCode({ orgId, username: "py-waiting@example.com" });
    await vi.waitFor(async () => expect(await rowTo("+41791110009")).toMatchObject({ status: "sent", body: null }), { timeout: 20_000 });
    expect(delivered(file).map((d) => d.recipient)).toContain("+41791110009");
    await vi.waitFor(() => expect(server.app.deliveryWaits.waiting).toBe(1), { timeout: 20_000 });
    running.child.kill("SIGTERM");
    // Its claim is cancelled, not left to wait out its time (the server cuts it to its RPC_TIMEOUT, 10 s).
    await vi.waitFor(() => expect(server.app.deliveryWaits.waiting).toBe(0), { timeout: 3_000 });
    const exit = await running.ended;
    expect(exit.code, exit.stderr).toBe(0);
    expect(exit.stderr).not.toContain("claim failed");
  });

  it("reports a refused admin token as UNAUTHENTICATED, without echoing it", async () => {
    const token = "cga_wrongwrongwr_" + "x".repeat(43);
    const child = await worker([], token);
    expect(child.code).toBe(1);
    expect(child.stderr).toMatch(/^error: UNAUTHENTICATED: /);
    expect(child.stderr).not.toContain(token);
  });
});
