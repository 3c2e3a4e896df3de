import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { status } from "@grpc/grpc-js";
import http2 from "node:http2";
import pg from "pg";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus as Serving,
  HealthCheckResponseSchema,
} from "../gen/grpc/health/v1/health_pb.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { grpcClient, postJson } from "./support/clients.ts";
import { serverStream } from "./support/grpc-streams.ts";

const WATCH = "/grpc.health.v1.Health/Watch";
// Short intervals, so that a Watch notices a database outage within the test.
const fast = { health: { cacheMs: 50, timeoutMs: 1_000, watchIntervalMs: 100 } };

async function getJson(url: string) {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get("content-type"), body: await res.json() };
}

/** Runs SQL as the superuser on the server's maintenance database. */
async function asSuperuser(databaseUrl: string, sql: string) {
  const url = new URL(databaseUrl);
  url.pathname = "/postgres";
  const client = new pg.Client({ connectionString: url.toString() });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("a server whose database answers", () => {
  let server: TestServer;
  let health: ReturnType<typeof grpcClient<typeof Health>>;
  beforeAll(async () => {
    server = await startTestServer({ COURIER_ENABLED: "false" }, fast);
    health = grpcClient(Health, server.url);
  });
  afterAll(async () => {
    health?.close();
    await server?.close();
  });

  it("is alive and ready over plain HTTP", async () => {
    expect(await getJson(server.url + "/healthz")).toEqual({ status: 200, type: "application/json", body: { status: "ok" } });
    expect(await getJson(server.app.opsUrl + "/readyz")).toEqual({
      status: 200,
      type: "application/json",
      body: { status: "ready", database: "ok", migrations: "applied" },
    });
  });

  it("answers HEAD as GET without a body, over HTTP/1.1 and HTTP/2, on the API port and the operations listener", async () => {
    for (const url of [`${server.url}/healthz`, `${server.url}/.well-known/jwks.json`, `${server.url}/verify`, `${server.app.opsUrl}/healthz`, `${server.app.opsUrl}/readyz`]) {
      const [get, head] = [await fetch(url), await fetch(url, { method: "HEAD" })];
      expect(head.status, url).toBe(200);
      expect(head.headers.get("content-type"), url).toBe(get.headers.get("content-type"));
      expect(await head.text(), url).toBe("");
      expect((await get.text()).length, url).toBeGreaterThan(0);
    }
    const session = http2.connect(server.url);
    try {
      const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const stream = session.request({ ":method": "HEAD", ":path": "/healthz" });
        let status = 0;
        let body = "";
        stream.on("response", (h) => (status = Number(h[":status"])));
        stream.on("data", (chunk: Buffer) => (body += chunk.toString()));
        stream.on("end", () => resolve({ status, body }));
        stream.on("error", reject);
      });
      expect(answer).toEqual({ status: 200, body: "" });
    } finally {
      session.close();
    }
  });

  it("answers SERVING overall and for each of its services over gRPC", async () => {
    for (const service of ["", "codegate.v1.AdminService", "codegate.v1.LoginService", "codegate.v1.RegistrationService", "codegate.v1.RecoveryService", "codegate.v1.CodeService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"]) {
      const r = await health.call("check", { service });
      expect(r.ok && r.value.status, service).toBe(Serving.SERVING);
    }
  });

  it("answers NOT_FOUND for a service it does not have", async () => {
    const r = await health.call("check", { service: "codegate.v1.NoSuchService" });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe(status.NOT_FOUND);
      expect(r.error.details).toContain("codegate.v1.NoSuchService");
    }
  });

  it("answers Check and List over Connect JSON too", async () => {
    const check = await postJson(server.url, "/grpc.health.v1.Health/Check", { service: "codegate.v1.LoginService" });
    expect(check.status).toBe(200);
    expect(check.body).toEqual({ status: "SERVING" });
    const list = await postJson(server.url, "/grpc.health.v1.Health/List", {});
    expect(list.status).toBe(200);
    expect(list.body.statuses[""]).toEqual({ status: "SERVING" });
    expect(list.body.statuses["codegate.v1.AdminService"]).toEqual({ status: "SERVING" });
  });

  it("watches an unknown service as SERVICE_UNKNOWN without ending the call", async () => {
    const watch = serverStream(server.url, WATCH, HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "nope.Nope" });
    expect((await watch.responses.nth(1)).status).toBe(Serving.SERVICE_UNKNOWN);
    const ended = await Promise.race([watch.responses.ended.then(() => true), new Promise((r) => setTimeout(() => r(false), 400))]);
    expect(ended).toBe(false);
    watch.cancel();
    expect((await watch.responses.ended).code).toBe(status.CANCELLED);
    watch.close();
  });

  it("is not ready while a migration is pending", async () => {
    const conn = server.app.orm.em.getConnection();
    const [row] = await conn.execute("select * from codegate_migrations order by id desc limit 1");
    await conn.execute("delete from codegate_migrations where id = ?", [row.id]);
    try {
      const r = await getJson(server.app.opsUrl + "/readyz");
      expect(r.status).toBe(503);
      expect(r.body).toEqual({ status: "not_ready", database: "ok", migrations: "pending" });
    } finally {
      await conn.execute("insert into codegate_migrations (id, name, executed_at) values (?, ?, ?)", [row.id, row.name, row.executed_at]);
    }
    expect((await getJson(server.app.opsUrl + "/readyz")).status).toBe(200);
  });
});

describe("a database that stops answering, and comes back", () => {
  let server: TestServer;
  let dbName: string;
  beforeAll(async () => {
    server = await startTestServer({ COURIER_ENABLED: "false" }, fast);
    dbName = new URL(server.databaseUrl).pathname.slice(1);
  });
  afterAll(async () => {
    await asSuperuser(server.databaseUrl, `alter database ${dbName} allow_connections true`).catch(() => {});
    await server?.close();
  });

  it("turns NOT_SERVING and not ready during the outage, and back after, telling a Watch each time", async () => {
    const health = grpcClient(Health, server.url);
    const watch = serverStream(server.url, WATCH, HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "codegate.v1.LoginService" });
    expect((await watch.responses.nth(1)).status).toBe(Serving.SERVING);

    // No new connection can be made, and the open ones are cut.
    await asSuperuser(server.databaseUrl, `alter database ${dbName} allow_connections false`);
    await asSuperuser(server.databaseUrl, `select pg_terminate_backend(pid) from pg_stat_activity where datname = '${dbName}'`);

    expect((await watch.responses.nth(2)).status).toBe(Serving.NOT_SERVING);
    const check = await health.call("check", { service: "" });
    expect(check.ok && check.value.status).toBe(Serving.NOT_SERVING);
    const ready = await getJson(server.app.opsUrl + "/readyz");
    expect(ready.status).toBe(503);
    expect(ready.body).toEqual({ status: "not_ready", database: "unavailable", migrations: "unknown" });
    // The process itself is fine.
    expect((await getJson(server.url + "/healthz")).status).toBe(200);

    await asSuperuser(server.databaseUrl, `alter database ${dbName} allow_connections true`);
    expect((await watch.responses.nth(3)).status).toBe(Serving.SERVING);
    await until("ready again", async () => (await getJson(server.app.opsUrl + "/readyz")).status === 200);
    expect(watch.responses.messages.map((m) => m.status)).toEqual([Serving.SERVING, Serving.NOT_SERVING, Serving.SERVING]);

    watch.cancel();
    watch.close();
    health.close();
  });
});

describe("shutting down", () => {
  it("answers NOT_SERVING and not ready once it begins, and tells open Watches before closing them", async () => {
    const server = await startTestServer({ COURIER_ENABLED: "false" });
    const health = grpcClient(Health, server.url);
    const watch = serverStream(server.url, WATCH, HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    try {
      expect((await watch.responses.nth(1)).status).toBe(Serving.SERVING);
      // close() begins with this; called alone here so the server still answers.
      await server.app.health.beginShutdown();
      expect((await watch.responses.nth(2)).status).toBe(Serving.NOT_SERVING);
      const check = await health.call("check", { service: "codegate.v1.AdminService" });
      expect(check.ok && check.value.status).toBe(Serving.NOT_SERVING);
      const ready = await getJson(server.app.opsUrl + "/readyz");
      expect(ready.status).toBe(503);
      expect(ready.body.status).toBe("shutting_down");
    } finally {
      health.close();
      await server.close();
    }
    // The Watch ends with the server, having heard nothing more.
    await watch.responses.ended;
    expect(watch.responses.messages.map((m) => m.status)).toEqual([Serving.SERVING, Serving.NOT_SERVING]);
    watch.close();
  });

  it("tells a Watch NOT_SERVING when the app closes", async () => {
    const server = await startTestServer({ COURIER_ENABLED: "false" });
    const watch = serverStream(server.url, WATCH, HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    expect((await watch.responses.nth(1)).status).toBe(Serving.SERVING);
    await server.close();
    await watch.responses.ended;
    expect(watch.responses.messages.map((m) => m.status)).toEqual([Serving.SERVING, Serving.NOT_SERVING]);
    watch.close();
  });
});
