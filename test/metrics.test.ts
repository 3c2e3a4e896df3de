import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import { HealthCheckRequestSchema, HealthCheckResponseSchema } from "../gen/grpc/health/v1/health_pb.ts";
import { ManualClock } from "../src/domain/clock.ts";
import type { Purpose } from "../src/domain/purpose.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { serverStream } from "./support/grpc-streams.ts";

let server: TestServer;
let admin: ReturnType<typeof grpcClient<typeof AdminService>>;
const auth = bearer(ADMIN_TOKEN);
/** The server's clock: the queue's age is measured on it. */
const clock = new ManualClock();

beforeAll(async () => {
  // No courier: the queue gauges must see the rows this test puts there.
  server = await startTestServer({ COURIER_ENABLED: "false", DATABASE_POOL_SIZE: "7" }, { clock });
  admin = grpcClient(AdminService, server.url);
});
afterAll(async () => {
  admin?.close();
  await server?.close();
});

async function scrape(): Promise<{ type: string | null; text: string; value(series: string): number | undefined }> {
  const res = await fetch(server.app.opsUrl + "/metrics");
  expect(res.status).toBe(200);
  const text = await res.text();
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { type: res.headers.get("content-type"), text, value: (series) => values.get(series) };
}

/** How far past the real one the fake performance.now() of scrapeAfterGaugeWindow() has been set. */
let gaugeSkewMs = 0;

/**
 * A scrape whose gauges read the database afresh. They share one query per second,
 * timed on performance.now() (src/server/ops/metrics.ts), not on the server's clock: instead of
 * sleeping through that second, performance.now() is faked for the scrape, a second
 * further ahead each time (the window of the last scrape then lies in the future for
 * real time: a plain scrape() within the next seconds sees the same database values).
 */
async function scrapeAfterGaugeWindow(): Promise<Awaited<ReturnType<typeof scrape>>> {
  gaugeSkewMs += 1_001;
  const real = performance.now();
  vi.useFakeTimers({ toFake: ["performance"] }); // starts at 0
  try {
    vi.advanceTimersByTime(real + gaugeSkewMs);
    return await scrape();
  } finally {
    vi.useRealTimers();
  }
}

const rpc = (service: string, method: string, code: string) => `{service="${service}",method="${method}",code="${code}"}`;

describe("GET /metrics", () => {
  it("is Prometheus text with the process metrics", async () => {
    const m = await scrape();
    expect(m.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(m.text).toContain("# TYPE codegate_rpc_duration_seconds histogram");
    expect(m.value("process_cpu_user_seconds_total")).toBeGreaterThan(0);
  });

  it("counts and times RPCs by service, method and status code, over gRPC and Connect", async () => {
    const before = await scrape();
    const A = "codegate.v1.AdminService";
    const count = (m: Awaited<ReturnType<typeof scrape>>, method: string, code: string) => m.value(`codegate_rpc_handled_total${rpc(A, method, code)}`) ?? 0;

    expect((await admin.call("listOrganizations", {}, auth)).ok).toBe(true);
    expect((await postJson(server.url, `/${A}/ListOrganizations`, {}, auth)).status).toBe(200);
    expect((await postJson(server.url, `/${A}/GetOrganization`, { orgId: "or-aaaaa-bbbbb-cccccccccccccccc" }, auth)).status).toBe(404);
    expect((await postJson(server.url, `/${A}/GetOrganization`, { orgId: "bad" }, auth)).status).toBe(400);
    // Refused by the bearer check before any interceptor runs: still counted.
    expect((await postJson(server.url, `/${A}/ListOrganizations`, {})).status).toBe(401);

    const after = await scrape();
    expect(count(after, "ListOrganizations", "OK") - count(before, "ListOrganizations", "OK")).toBe(2);
    expect(count(after, "GetOrganization", "NotFound") - count(before, "GetOrganization", "NotFound")).toBe(1);
    expect(count(after, "GetOrganization", "InvalidArgument") - count(before, "GetOrganization", "InvalidArgument")).toBe(1);
    expect(count(after, "ListOrganizations", "Unauthenticated") - count(before, "ListOrganizations", "Unauthenticated")).toBe(1);

    const hist = (suffix: string, labels: string) => after.value(`codegate_rpc_duration_seconds_${suffix}${labels}`);
    expect(hist("count", rpc(A, "ListOrganizations", "OK"))).toBe(count(after, "ListOrganizations", "OK"));
    expect(hist("sum", rpc(A, "ListOrganizations", "OK"))).toBeGreaterThan(0);
    expect(after.value(`codegate_rpc_duration_seconds_bucket{le="+Inf",service="${A}",method="GetOrganization",code="NotFound"}`)).toBe(1);
  });

  it("counts a streaming RPC when its stream ends, with the way it ended", async () => {
    const watch = serverStream(server.url, "/grpc.health.v1.Health/Watch", HealthCheckRequestSchema, HealthCheckResponseSchema, { service: "" });
    await watch.responses.nth(1);
    const open = await scrape();
    expect(open.value(`codegate_rpc_handled_total${rpc("grpc.health.v1.Health", "Watch", "Canceled")}`)).toBeUndefined();
    watch.cancel();
    await watch.responses.ended;
    watch.close();
    // The server counts the call once it sees the stream end, after the client does.
    await vi.waitFor(
      async () => expect((await scrape()).value(`codegate_rpc_handled_total${rpc("grpc.health.v1.Health", "Watch", "Canceled")}`)).toBe(1),
      { timeout: 5_000, interval: 20 },
    );
  });

  it("counts codes by purpose, each purpose from zero, and never a value a caller chose", async () => {
    const before = await scrape();
    for (const purpose of ["login", "registration", "recovery"]) {
      expect(before.value(`codegate_codes_issued_total{purpose="${purpose}"}`)).toBe(0);
      expect(before.value(`codegate_codes_locked_total{purpose="${purpose}"}`)).toBe(0);
      expect(before.value(`codegate_courier_abandoned_total{purpose="${purpose}"}`)).toBe(0);
    }
    const { codes, courier } = server.app.metrics;
    codes.issued("login", true);
    codes.issued("login", false);
    codes.verified("registration");
    codes.failed("recovery");
    codes.locked("recovery");
    courier.sent("login");
    courier.retried("login");
    courier.abandoned("registration");
    // A username passed where a purpose belongs, as a bug would.
    codes.failed("jdoe@example.com" as Purpose);

    const m = await scrape();
    expect(m.value(`codegate_codes_issued_total{purpose="login"}`)).toBe(2);
    expect(m.value(`codegate_codes_verified_total{purpose="registration"}`)).toBe(1);
    expect(m.value(`codegate_codes_failed_total{purpose="recovery"}`)).toBe(1);
    expect(m.value(`codegate_codes_locked_total{purpose="recovery"}`)).toBe(1);
    expect(m.value(`codegate_courier_sent_total{purpose="login"}`)).toBe(1);
    expect(m.value(`codegate_courier_retries_total{purpose="login"}`)).toBe(1);
    expect(m.value(`codegate_courier_abandoned_total{purpose="registration"}`)).toBe(1);
    expect(m.value(`codegate_codes_failed_total{purpose="other"}`)).toBe(1);
    expect(m.text).not.toContain("jdoe");
  });

  it("shows no username or token that went through the API", async () => {
    const org = await admin.call("createOrganization", { name: "Metrics" }, auth);
    if (!org.ok) throw org.error;
    const username = `metrics-${randomUUID()}@example.com`;
    expect((await admin.call("createIdentity", { orgId: org.value.organization!.id, username, skipRegistrationCode: true }, auth)).ok).toBe(true);
    const m = await scrape();
    expect(m.text).toContain(`method="CreateIdentity",code="OK"`);
    expect(m.text).not.toContain(username.split("@")[0]);
    expect(m.text).not.toContain(ADMIN_TOKEN);
  });

  it("reports the queue from the database per channel: depth and the age of the oldest message", async () => {
    const depth = (m: Awaited<ReturnType<typeof scrape>>, channel: string) => m.value(`codegate_courier_queue_depth{channel="${channel}"}`);
    const age = (m: Awaited<ReturnType<typeof scrape>>, channel: string) => m.value(`codegate_courier_oldest_queued_age_seconds{channel="${channel}"}`);
    const empty = await scrape();
    for (const channel of ["smtp", "mail_api", "sms"]) {
      expect(depth(empty, channel)).toBe(0);
      expect(age(empty, channel)).toBe(0);
    }

    const conn = server.app.orm.em.getConnection();
    const now = clock.now().getTime();
    const insert = (status: string, createdAgoMs: number, channel = "smtp") =>
      conn.execute(
        `insert into courier_message (org_id, id, channel, purpose, recipient, subject, body, key_id, status, send_count, next_attempt_at, created_at, updated_at)
         values ('or-aaaaa-bbbbb-cccccccccccccccc', ?, ?, 'login', 'x@example.com', 's', null, 'k', ?, 0, ?, ?, ?)`,
        [randomUUID(), channel, status, new Date(now + 3_600_000), new Date(now - createdAgoMs), new Date(now - createdAgoMs)],
      );
    await insert("queued", 90_000);
    await insert("queued", 5_000);
    await insert("sent", 600_000);
    // A text the operator's delivery worker has not claimed: its own series, apart from the courier's.
    await insert("queued", 300_000, "sms");
    const m = await scrapeAfterGaugeWindow();
    expect(depth(m, "smtp")).toBe(2);
    expect(depth(m, "sms")).toBe(1);
    expect(depth(m, "mail_api")).toBe(0);
    // Measured on the server's clock, which has not moved: exactly the ages given above.
    expect(age(m, "smtp")).toBe(90);
    expect(age(m, "sms")).toBe(300);
    clock.advance(30_000);
    expect(age(await scrapeAfterGaugeWindow(), "smtp")).toBe(120);
  });

  it("reports the database pool of this process", async () => {
    const m = await scrape();
    expect(m.value("codegate_db_pool_max_connections")).toBe(7);
    const inUse = m.value(`codegate_db_pool_connections{state="in_use"}`)!;
    const idle = m.value(`codegate_db_pool_connections{state="idle"}`)!;
    expect(inUse).toBeGreaterThanOrEqual(0);
    expect(idle).toBeGreaterThanOrEqual(0);
    // The server has used the database, so the pool holds at least one connection.
    expect(inUse + idle).toBeGreaterThan(0);
    expect(inUse + idle).toBeLessThanOrEqual(7);
    // Counts, at the moment of the scrape, queries waiting for a connection (also one being opened).
    expect(m.value("codegate_db_pool_waiting")).toBeGreaterThanOrEqual(0);
  });
});
