// OpenTelemetry traces: a caller's trace context (traceparent) continues through
// the call, its statements and the courier's delivery of its mail; off unless
// configured. Spans are read from an in-memory exporter handed to the server.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { randomBytes } from "node:crypto";
import { SpanKind } from "@opentelemetry/api";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace";
import { loadConfig } from "../src/config/config.ts";
import { tracingEnabled } from "../src/lib/tracing.ts";
import { startTracing } from "../src/server/tracing.ts";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { grpcClient, postJson } from "./support/clients.ts";
import { SmtpSink, codeFrom } from "./support/smtp.ts";
import { startServerProcess } from "./support/process.ts";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

const SEND = "/codegate.v1.LoginService/SendLoginCode";
const exporter = new InMemorySpanExporter();
let smtp: SmtpSink;
let server: TestServer;
let orgId: string;

const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const traceparent = (traceId: string, spanId: string) => `00-${traceId}-${spanId}-01`;
const spansOf = (traceId: string) => exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;
const named = (spans: ReadableSpan[], name: string) => spans.filter((s) => s.name === name);

describe("tracing off (no OTEL_EXPORTER_OTLP_ENDPOINT)", () => {
  it("registers nothing: the helpers stay no-ops", () => {
    const config = loadConfig({ DATA_DIR: "/nonexistent" });
    expect(config.tracing.endpoint).toBeUndefined();
    expect(startTracing(config, "serve")).toBeUndefined();
    expect(tracingEnabled()).toBe(false);
  });

  it("is turned on by the standard variable, which must be a URL", () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }).tracing.endpoint?.href).toBe("http://collector:4318/");
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT: expected a URL/);
  });
});

describe("a traced send", () => {
  beforeAll(async () => {
    smtp = await SmtpSink.create();
    server = await startTestServer({ SMTP_URL: smtp.url, COURIER_POLL_INTERVAL: "50ms" }, { spanExporter: exporter });
    const fx = adminFixtures(server.url);
    orgId = (await fx.org("Traced")).id;
    await fx.identity(orgId, "traced@example.com");
    fx.close();
  });
  afterAll(async () => {
    await server?.close();
    await smtp?.stop();
  });

  it("continues the caller's trace over Connect: the call, its statements, and the delivery of its mail", async () => {
    const traceId = hex(16);
    const callerSpan = hex(8);
    const res = await postJson(server.url, SEND, { username: "traced@example.com", orgId }, { traceparent: traceparent(traceId, callerSpan) });
    expect(res.status).toBe(200);
    await smtp.waitFor((m) => m.some((x) => x.to === "traced@example.com"));
    await vi.waitFor(() => expect(named(spansOf(traceId), "deliver mail")).toHaveLength(1));

    const spans = spansOf(traceId);
    const [call] = named(spans, "codegate.v1.LoginService/SendLoginCode");
    expect(call.kind).toBe(SpanKind.SERVER);
    expect(parentOf(call)).toBe(callerSpan);
    expect(call.attributes["codegate.request_id"]).toBe(res.headers.get("x-request-id"));
    // The send is one statement, a child of the call.
    const statements = spans.filter((s) => s.attributes["db.system.name"] === "postgresql");
    expect(statements.length).toBeGreaterThanOrEqual(1);
    for (const s of statements) expect(parentOf(s)).toBe(call.spanContext().spanId);
    const [delivery] = named(spans, "deliver mail");
    expect(parentOf(delivery)).toBe(call.spanContext().spanId);
    expect(delivery.attributes["codegate.purpose"]).toBe("login");

    // Nothing of the user, the code or the mail's content in any span.
    const code = codeFrom(smtp.mailsTo("traced@example.com").at(-1)!);
    const everything = JSON.stringify(spans.map((s) => ({ name: s.name, attributes: s.attributes, events: s.events })));
    expect(everything).not.toContain("traced@example.com");
    expect(everything).not.toContain(code);
  });

  it("records a refused delivery in its span by its codes, never the SMTP server's words, which may quote the code", async () => {
    const fx = adminFixtures(server.url);
    await fx.identity(orgId, "quoted@example.com");
    fx.close();
    let code = "";
    smtp.refuse = (mail) => (mail.to === "quoted@example.com" ? ((code = codeFrom(mail)), `5.7.1 rejected content: ${mail.text.replace(/\s+/g, " ")}`) : undefined);
    try {
      const traceId = hex(16);
      expect((await postJson(server.url, SEND, { username: "quoted@example.com", orgId }, { traceparent: traceparent(traceId, hex(8)) })).status).toBe(200);
      const [delivery] = await vi.waitFor(() => {
        const spans = named(spansOf(traceId), "deliver mail");
        expect(spans).toHaveLength(1);
        return spans;
      });
      expect(code).toMatch(/^\d{6}$/);
      expect(delivery.status.message).toBe("EMESSAGE 554 5.7.1 at DATA (the SMTP server's reply is not kept: it may quote the mail)");
      const recorded = JSON.stringify({ status: delivery.status, events: delivery.events });
      expect(recorded).not.toContain("rejected content");
      expect(recorded).not.toContain(code);
    } finally {
      smtp.refuse = undefined;
    }
  });

  it("continues it over gRPC (grpc-js metadata) too", async () => {
    const traceId = hex(16);
    const callerSpan = hex(8);
    const login = grpcClient(LoginService, server.url);
    const answer = await login.call("sendLoginCode", { username: "traced@example.com", orgId }, { traceparent: traceparent(traceId, callerSpan) });
    login.close();
    expect(answer.ok).toBe(true);
    await vi.waitFor(() => expect(named(spansOf(traceId), "deliver mail")).toHaveLength(1));
    const [call] = named(spansOf(traceId), "codegate.v1.LoginService/SendLoginCode");
    expect(parentOf(call)).toBe(callerSpan);
  });

  it("starts a trace of its own without a traceparent, and records a refused call's error", async () => {
    const before = new Set(exporter.getFinishedSpans().map((s) => s.spanContext().spanId));
    const refused = await postJson(server.url, SEND, { username: "traced@example.com", orgId: "not-an-id" });
    expect(refused.status).toBe(400);
    const fresh = exporter.getFinishedSpans().filter((s) => !before.has(s.spanContext().spanId) && s.name === "codegate.v1.LoginService/SendLoginCode");
    expect(fresh).toHaveLength(1);
    expect(fresh[0].parentSpanContext).toBeUndefined();
    expect(fresh[0].attributes["rpc.response.status_code"]).toBe("InvalidArgument");
  });
});

describe("a server with OTEL_EXPORTER_OTLP_ENDPOINT", () => {
  it("exports its spans over OTLP/HTTP to that collector, the last ones when it stops", async () => {
    const received: { path: string; body: string }[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        received.push({ path: req.url ?? "", body: Buffer.concat(chunks).toString("utf8") });
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
    try {
      const port = (collector.address() as AddressInfo).port;
      const proc = await startServerProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_SERVICE_NAME: "codegate-under-test" });
      const traceId = hex(16);
      const health = await fetch(`${proc.url}/grpc.health.v1.Health/Check`, {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: traceparent(traceId, hex(8)) },
        body: "{}",
      });
      expect(health.status).toBe(200);
      expect(await proc.stop()).toBe(0);
      const traces = received.filter((r) => r.path === "/v1/traces");
      expect(traces.length).toBeGreaterThan(0);
      const all = traces.map((t) => t.body).join("\n");
      expect(all).toContain(traceId);
      expect(all).toContain("codegate-under-test");
      expect(all).toContain("grpc.health.v1.Health/Check");
    } finally {
      collector.close();
    }
  });
});
