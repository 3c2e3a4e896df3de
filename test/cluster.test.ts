// `serve` on every core (WORKERS, server/cluster.ts), as an operator runs it:
// `node src/main.ts serve` with API workers sharing the port and a courier
// worker, the primary's operations listener over all of them, a worker killed
// and replaced, and a graceful stop that leaves no process behind.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { startServerProcess, workersOf, type ServerProcess } from "./support/process.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { SmtpSink, codeFrom } from "./support/smtp.ts";
import { COURIER_NODE_FLAGS } from "../src/config/node-flags.ts";

const started: ServerProcess[] = [];
const sinks: SmtpSink[] = [];
const cleanups: (() => void)[] = [];
afterAll(async () => {
  for (const c of cleanups) c();
  for (const s of started) await s.stop();
  for (const s of sinks) await s.stop();
});

/** One request on a connection of its own: the cluster hands connections, not requests, to workers. */
function postOnNewConnection(url: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(url + path, { method: "POST", agent: false, headers: { "content-type": "application/json", "content-length": payload.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") }));
    });
    req.on("error", reject);
    req.end(payload);
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const metric = (text: string, line: RegExp) => Number(text.split("\n").find((l) => line.test(l))?.split(" ").at(-1));

describe("serve with WORKERS=2", () => {
  // One cluster for the file (each costs four processes' start): it serves, loses a worker,
  // and is stopped by the last test.
  let server: ServerProcess;
  let smtp: SmtpSink;
  beforeAll(async () => {
    smtp = await SmtpSink.create();
    sinks.push(smtp);
    server = await startServerProcess({ WORKERS: "2", SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms" });
    started.push(server);
  });

  it("serves from both API workers, delivers through the courier worker, and sums their metrics on the primary's operations listener", async () => {
    const workers = workersOf(server.child.pid!);
    expect(workers.map((w) => w.role).sort()).toEqual(["api", "api", "courier"]);
    // The courier's heap starts larger (config/node-flags.ts); the API workers' as the primary's.
    for (const w of workers) expect(COURIER_NODE_FLAGS.every((f) => w.args.includes(f)), w.role).toBe(w.role === "courier");

    const fx = adminFixtures(server.url);
    const org = await fx.org("Clustered");
    const users = Array.from({ length: 24 }, (_, i) => `clustered${i}@example.com`);
    await Promise.all(users.map((u) => fx.identity(org.id, u)));
    fx.close();
    for (const u of users) expect((await postOnNewConnection(server.url, "/codegate.v1.LoginService/SendLoginCode", { username: u, orgId: org.id })).status).toBe(200);
    // Both API workers answered some of the sends.
    const servedBy = new Set(server.logs.filter((l) => l.msg === "rpc" && l.rpc === "LoginService/SendLoginCode").map((l) => l.worker));
    expect(servedBy.size).toBe(2);

    // The courier worker mails the codes; they verify on whichever worker takes the call.
    await smtp.waitFor((m) => m.length >= users.length);
    const code = codeFrom(smtp.mailsTo(users[0])[0]);
    expect((await postOnNewConnection(server.url, "/codegate.v1.LoginService/VerifyLoginCode", { username: users[0], orgId: org.id, code })).status).toBe(200);

    const metrics = await (await fetch(`${server.opsUrl}/metrics`)).text();
    expect(metric(metrics, /^codegate_rpc_handled_total\{service="codegate.v1.LoginService",method="SendLoginCode",code="OK"\}/)).toBe(users.length);
    expect(metric(metrics, /^codegate_codes_issued_total\{purpose="login"\}/)).toBe(users.length);
    expect(metric(metrics, /^codegate_courier_sent_total\{purpose="login"\}/)).toBe(users.length);
    expect(metric(metrics, /^codegate_worker_restarts_total\{role="api"\}/)).toBe(0);
    const ready = await fetch(`${server.opsUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: "ready", workers: 2 });
  });

  it("replaces a worker that dies, and keeps serving meanwhile", async () => {
    const victim = workersOf(server.child.pid!).find((w) => w.role === "api")!;
    process.kill(victim.pid, "SIGKILL");
    await vi.waitFor(() => expect(server.logs.some((l) => l.msg === "worker died; starting another" && l.pid === victim.pid)).toBe(true), { timeout: 10_000 });
    // The line says which worker, and how it ended.
    expect(server.logs.find((l) => l.msg === "worker died; starting another" && l.pid === victim.pid)).toMatchObject({ role: "primary", workerRole: "api", exitCode: null, signal: "SIGKILL" });
    // Meanwhile the other worker answers every call.
    for (let i = 0; i < 5; i++) expect((await postOnNewConnection(server.url, "/codegate.v1.LoginService/SendLoginCode", { username: "x@example.com", orgId: "or-aaaaa-aaaaa-aaaaaaaaaaaaaa" })).status).toBe(200);
    await vi.waitFor(
      async () => {
        const workers = workersOf(server.child.pid!);
        expect(workers.filter((w) => w.role === "api")).toHaveLength(2);
        expect(workers.some((w) => w.pid === victim.pid)).toBe(false);
        expect((await fetch(`${server.opsUrl}/readyz`)).status).toBe(200);
      },
      { timeout: 20_000, interval: 100 },
    );
    const metrics = await (await fetch(`${server.opsUrl}/metrics`)).text();
    expect(metric(metrics, /^codegate_worker_restarts_total\{role="api"\}/)).toBe(1);
  });

  it("stops every worker on SIGTERM and exits 0; a primary killed outright takes its workers with it", async () => {
    const workers = workersOf(server.child.pid!);
    expect(workers).toHaveLength(3);
    expect(await server.stop()).toBe(0);
    for (const w of workers) expect(alive(w.pid), `${w.role} ${w.pid}`).toBe(false);

    const killed = await startServerProcess({ WORKERS: "2" });
    started.push(killed);
    const orphans = workersOf(killed.child.pid!);
    killed.child.kill("SIGKILL");
    await killed.exited;
    await vi.waitFor(() => {
      for (const w of orphans) expect(alive(w.pid), `${w.role} ${w.pid}`).toBe(false);
    }, { timeout: 20_000, interval: 100 });
  });

  it("starts a separate courier, as package.json's courier script does, with the courier worker's Node flags", () => {
    const script: string = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")).scripts.courier;
    expect(script).toBe(`node ${COURIER_NODE_FLAGS.join(" ")} src/main.ts courier`);
  });

  it("is refused on the embedded database, which serves one process", async () => {
    const { loadConfig } = await import("../src/config/config.ts");
    expect(() => loadConfig({ WORKERS: "2" })).toThrow(/WORKERS=2: the embedded database \(PGlite\) serves one process; set DATABASE_URL/);
    expect(loadConfig({}).workers).toBe(1);
  });
});

describe("MAX_CONNECTIONS with WORKERS=2", () => {
  it("refuses a connection past every worker's limit, counted and logged, rather than passing it from worker to worker", async () => {
    const full = await startServerProcess({ WORKERS: "2", MAX_CONNECTIONS: "1", COURIER_ENABLED: "false" });
    started.push(full);
    const { port } = new URL(full.url);
    /** A keep-alive connection, answered once (true), or closed without an answer (false). */
    const connection = async () => {
      const socket = net.connect(Number(port), "127.0.0.1");
      socket.on("error", () => {});
      cleanups.push(() => socket.destroy());
      socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
      return new Promise<boolean>((resolve) => {
        socket.once("data", () => resolve(true));
        socket.once("close", () => resolve(false));
      });
    };
    // The primary hands connections round robin: one to each worker, and both are full.
    expect([await connection(), await connection()]).toEqual([true, true]);
    expect(await connection()).toBe(false);
    const metrics = await (await fetch(`${full.opsUrl}/metrics`)).text();
    expect(metric(metrics, /^codegate_connections_refused_total\{reason="max_connections"\}/)).toBe(1);
    await vi.waitFor(() => expect(full.logs.filter((l) => l.msg?.startsWith("connection refused") && l.reason === "max_connections")).toHaveLength(1));
  });
});

describe("the primary's exit code", () => {
  it("is 1 when workers keep dying: past five deaths in a minute it stops the rest rather than restarting them", async () => {
    const looping = await startServerProcess({ WORKERS: "2", COURIER_ENABLED: "false" });
    started.push(looping);
    // One worker is left alone; the other, and each that replaces it, is killed.
    const [spared] = workersOf(looping.child.pid!);
    /** The workers now; none while one that just died is still being read. */
    const workersNow = () => {
      try {
        return workersOf(looping.child.pid!);
      } catch {
        return [];
      }
    };
    const killed = new Set<number>();
    let gaveUp: Record<string, any> | undefined;
    while (!(gaveUp = looping.logs.find((l) => l.msg === "workers keep dying; stopping"))) {
      // As soon as it is forked: each death counts, listening or not.
      const victim = await vi.waitUntil(() => workersNow().find((w) => w.pid !== spared!.pid && !killed.has(w.pid)), { timeout: 10_000, interval: 20 });
      killed.add(victim.pid);
      process.kill(victim.pid, "SIGKILL");
      await vi.waitFor(() => expect(looping.logs.some((l) => (l.msg === "worker died; starting another" && l.pid === victim.pid) || l.msg === "workers keep dying; stopping")).toBe(true), {
        timeout: 10_000,
        interval: 20,
      });
    }
    expect(gaveUp.crashes).toBe(6);
    expect(killed.size).toBe(6);
    expect(await looping.exited).toBe(1);
    // The worker left alone was stopped as at a shutdown, within its grace; none died or was started after.
    expect(alive(spared!.pid)).toBe(false);
    const after = looping.logs.slice(looping.logs.indexOf(gaveUp) + 1).map((l) => l.msg);
    expect(after.filter((msg) => msg === "worker died; starting another" || msg === "worker did not stop in time; killing it")).toEqual([]);
    for (const pid of killed) expect(alive(pid), String(pid)).toBe(false);
  });

  it("is 1 when a worker does not stop within its grace: it is killed, and the others stop as usual", async () => {
    const server = await startServerProcess({ WORKERS: "2", COURIER_ENABLED: "false", SHUTDOWN_GRACE: "200ms" });
    started.push(server);
    const [stuck, other] = workersOf(server.child.pid!);
    // A worker that cannot hear the shutdown: stopped, as a debugger or a hung event loop would leave it.
    process.kill(stuck!.pid, "SIGSTOP");
    cleanups.push(() => alive(stuck!.pid) && process.kill(stuck!.pid, "SIGKILL"));
    expect(await server.stop()).toBe(1);
    expect(server.logs.filter((l) => l.msg === "worker did not stop in time; killing it").map((l) => l.pid)).toEqual([stuck!.pid]);
    expect(alive(stuck!.pid)).toBe(false);
    expect(alive(other!.pid)).toBe(false);
  });
});
