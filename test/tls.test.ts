// TLS on the listening port (TLS_CERT_FILE, TLS_KEY_FILE): HTTP/1.1 and HTTP/2 by
// ALPN on one port, grpc-js with TLS credentials, the connection limits and time
// bounds as in cleartext, a renewed certificate taken without a restart, and
// settings that cannot work refused at start, naming them. The server runs as a
// process of its own, as in production: a crash is an exit.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, utimesSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import grpc, { status } from "@grpc/grpc-js";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { loadConfig } from "../src/config/config.ts";
import { createLogger } from "../src/lib/log.ts";
import { givenTicketKeys, type TicketKeys } from "../src/server/ticket-keys.ts";
import { serverTls } from "../src/server/tls.ts";
import { Writable } from "node:stream";
import { grpcClient } from "./support/clients.ts";
import { okListener } from "./support/listener.ts";
import { commandEnv, pastDeadline, startServerProcess, workersOf, type ServerProcess } from "./support/process.ts";
import { ADMIN_TOKEN, freshDatabase } from "./support/server.ts";
import { execFile } from "node:child_process";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const fixture = (name: string) => new URL(`./fixtures/tls/${name}`, import.meta.url).pathname;
const CA = readFileSync(fixture("localhost.crt"));
const RENEWED_CA = readFileSync(fixture("renewed.crt"));
const HEADERS_TIMEOUT_MS = 1_000;
/** The calls' deadline: a hostile test waits past it (and past HEADERS_TIMEOUT) before it checks the server still serves. */
const RPC_TIMEOUT_MS = 1_500;

let smtp: SmtpSink;
let server: ServerProcess;
let port: number;
let orgId: string;
const cleanups: (() => unknown)[] = [];

interface Answer {
  status: number;
  body: any;
  /** The protocol the handshake agreed. */
  alpn: string | false;
}

/** A JSON request over HTTPS/1.1 on a connection of its own, trusting the test certificate; asking for HTTP/1.1 by ALPN, or not asking. */
function https1(path: string, body?: unknown, headers: Record<string, string> = {}, alpn = true): Promise<Answer> {
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const options: https.RequestOptions & tls.ConnectionOptions = {
      host: "127.0.0.1",
      port,
      path,
      method: payload ? "POST" : "GET",
      ca: CA,
      ALPNProtocols: alpn ? ["http/1.1"] : undefined,
      agent: false,
      headers: { ...(payload ? { "content-type": "application/json" } : {}), ...headers },
    };
    const req = https.request(options, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode!, body: text.startsWith("{") ? JSON.parse(text) : text, alpn: (res.socket as tls.TLSSocket).alpnProtocol ?? false });
        });
    });
    req.on("error", reject);
    req.end(payload);
  });
}

/** A JSON request over HTTP/2 with TLS. */
async function https2(path: string, body: unknown): Promise<Answer> {
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: CA });
  try {
    await new Promise<void>((resolve, reject) => (session.once("connect", () => resolve()), session.once("error", reject)));
    const alpn = session.alpnProtocol ?? false;
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/json" });
    req.end(JSON.stringify(body));
    const chunks: Buffer[] = [];
    const statusCode = await new Promise<number>((resolve, reject) => (req.once("response", (h) => resolve(Number(h[":status"]))), req.once("error", reject)));
    for await (const c of req) chunks.push(c as Buffer);
    return { status: statusCode, body: JSON.parse(Buffer.concat(chunks).toString("utf8")), alpn };
  } finally {
    session.close();
  }
}

const admin = (method: string, body: unknown) => https1(`/codegate.v1.AdminService/${method}`, body, { authorization: `Bearer ${ADMIN_TOKEN}` });

async function activeIdentity(): Promise<string> {
  const username = `tls-${randomUUID()}@example.com`;
  const created = await admin("CreateIdentity", { orgId, username, skipRegistrationCode: true });
  expect(created.status).toBe(200);
  expect((await admin("SetIdentityState", { identityId: created.body.identity.id, state: "IDENTITY_STATE_ACTIVE" })).status).toBe(200);
  return username;
}

/** Past every deadline, the server still answers a whole login over HTTPS, and logged no unhandled failure. */
async function stillServes(): Promise<void> {
  await pastDeadline(Math.max(RPC_TIMEOUT_MS, HEADERS_TIMEOUT_MS) + 500);
  expect(server.alive(), server.stderr.join("")).toBe(true);
  const username = await activeIdentity();
  expect((await https1("/codegate.v1.LoginService/SendLoginCode", { username, orgId })).status).toBe(200);
  const code = codeFrom(await smtp.nextMailTo(username));
  expect((await https1("/codegate.v1.LoginService/VerifyLoginCode", { username, orgId, code })).status).toBe(200);
  expect(server.logs.filter((l) => l.level === "error" || l.level === "fatal" || /unhandled|uncaught/.test(l.msg))).toEqual([]);
}

/** Runs `test` against an in-process listener with the test certificate, whose bounds are `boundsMs`; closes it after. */
async function withTlsListener(boundsMs: number, test: (port: number) => Promise<void>): Promise<void> {
  const log = createLogger("silent");
  const served = serverTls({ certFile: fixture("localhost.crt"), keyFile: fixture("localhost.key") }, log);
  const { port, close } = await okListener({ boundsMs, tls: served, log });
  try {
    await test(port);
  } finally {
    served.close();
    await close();
  }
}

/**
 * The lifetime hint of the session's ticket, in seconds: field [9] of OpenSSL's DER
 * encoding of a session (ssl/ssl_asn1.c), whose fields are tag, short or long length, value.
 * Node puts a header of its own (a version, the server name) before the DER: it starts at
 * the SEQUENCE whose length reaches exactly to the end.
 */
function sessionTimeoutOf(session: Buffer): number {
  const at = session.findIndex((b, i) => b === 0x30 && session[i + 1] === 0x82 && i + 4 + session.readUInt16BE(i + 2) === session.length);
  if (at < 0) throw new Error("no DER session found");
  const der = session.subarray(at);
  const lengthAt = (i: number): [length: number, start: number] => {
    const first = der[i]!;
    if (first < 0x80) return [first, i + 1];
    const n = first & 0x7f;
    return [der.subarray(i + 1, i + 1 + n).reduce((a, b) => a * 256 + b, 0), i + 1 + n];
  };
  let [, i] = lengthAt(1); // inside the outer SEQUENCE
  while (i < der.length) {
    const tag = der[i]!;
    const [length, start] = lengthAt(i + 1);
    if (tag === 0xa9) {
      const [intLength, intStart] = lengthAt(start + 1); // the INTEGER inside the explicit tag
      return der.subarray(intStart, intStart + intLength).reduce((a, b) => a * 256 + b, 0);
    }
    i = start + length;
  }
  throw new Error("the session has no ticket lifetime hint");
}

/** A TCP connection to the TLS port; answers once the server has closed it. */
async function rawConnection(): Promise<{ socket: net.Socket; closed: Promise<Buffer> }> {
  const socket = net.connect({ port, host: "127.0.0.1" });
  cleanups.push(() => socket.destroy());
  const received: Buffer[] = [];
  socket.on("data", (c: Buffer) => received.push(c));
  socket.on("error", () => {});
  const closed = new Promise<Buffer>((resolve) => socket.once("close", () => resolve(Buffer.concat(received))));
  await new Promise((resolve) => socket.once("connect", resolve));
  return { socket, closed };
}

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startServerProcess({
    TLS_CERT_FILE: fixture("localhost.crt"),
    TLS_KEY_FILE: fixture("localhost.key"),
    HEADERS_TIMEOUT: `${HEADERS_TIMEOUT_MS}ms`,
    RPC_TIMEOUT: `${RPC_TIMEOUT_MS}ms`,
    MAX_CONNECTIONS_PER_ADDRESS: "4",
    // Every loopback address: a client may reach two of them from one address and port.
    HOST: "0.0.0.0",
    SMTP_URL: smtp.url,
    COURIER_POLL_INTERVAL: "50ms",
  });
  port = Number(new URL(server.url).port);
  const org = await admin("CreateOrganization", { name: "Secured" });
  expect(org.status).toBe(200);
  orgId = org.body.organization.id;
});

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await server?.stop();
  await smtp?.stop();
});

/** A TLS connection to `port` that offers `ticket` to resume, or makes a new session: whether it resumed, and the ticket. */
function tlsSession(port: number, { ticket, ca = CA }: { ticket?: Buffer; ca?: Buffer | Buffer[] } = {}): Promise<{ reused: boolean; ticket: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost", session: ticket, ALPNProtocols: ["http/1.1"] });
    s.once("error", reject);
    s.once("close", () => reject(new Error("closed before the session was known")));
    // TLS 1.3 hands a ticket over after the handshake: a new session waits for it.
    if (ticket) s.once("secureConnect", () => (resolve({ reused: s.isSessionReused(), ticket }), s.destroy()));
    else s.once("session", (issued: Buffer) => (resolve({ reused: s.isSessionReused(), ticket: issued }), s.destroy()));
  });
}

/** TLS sessions against serve's workers on `port`, which the cluster hands new connections in turn. */
function workerSessions(port: number) {
  const connect = (ticket?: Buffer) => tlsSession(port, { ticket });
  /** A new session that resumes on eight connections, which the cluster hands to its workers in turn: both. Answers its ticket. */
  const resumedOnBoth = () =>
    // Tried again when a rotation falls between the session and its eighth resumption.
    vi.waitFor(
      async () => {
        const first = await connect();
        expect(first.reused).toBe(false);
        const resumed: boolean[] = [];
        for (let i = 0; i < 8; i++) resumed.push((await connect(first.ticket)).reused);
        expect(resumed).toEqual(Array(8).fill(true));
        return first.ticket;
      },
      { timeout: 30_000, interval: 50 },
    );
  return { connect, resumedOnBoth };
}

describe("TLS on the listening port", () => {
  it("serves HTTP/1.1 and HTTP/2 on one port, chosen by ALPN: a whole login over each", async () => {
    expect(await https1("/healthz")).toEqual({ status: 200, body: { status: "ok" }, alpn: "http/1.1" });
    // A client that names no protocol gets HTTP/1.1.
    expect(await https1("/healthz", undefined, {}, false)).toEqual({ status: 200, body: { status: "ok" }, alpn: false });
    const username = await activeIdentity();
    const sent = await https2("/codegate.v1.LoginService/SendLoginCode", { username, orgId });
    expect(sent).toMatchObject({ status: 200, alpn: "h2" });
    const code = codeFrom(await smtp.nextMailTo(username));
    const verified = await https1("/codegate.v1.LoginService/VerifyLoginCode", { username, orgId, code });
    expect(verified).toMatchObject({ status: 200, alpn: "http/1.1" });
    expect(verified.body.token.split(".")).toHaveLength(3);
  });

  it("serves grpc-js with TLS credentials, and refuses it without them", async () => {
    const secured = grpcClient(LoginService, `127.0.0.1:${port}`, grpc.credentials.createSsl(CA));
    const cleartext = grpcClient(LoginService, `127.0.0.1:${port}`);
    try {
      const answer = await secured.call("sendLoginCode", { username: "nobody@example.com", orgId });
      expect(answer.ok).toBe(true);
      const refused = await cleartext.call("sendLoginCode", { username: "nobody@example.com", orgId });
      expect(refused.ok).toBe(false);
      expect(!refused.ok && refused.error.code).toBe(status.UNAVAILABLE);
    } finally {
      secured.close();
      cleartext.close();
    }
  });

  it("closes a cleartext request, a silent connection and a handshake sent a byte at a time, within HEADERS_TIMEOUT, and serves on", async () => {
    const cleartext = await rawConnection();
    cleartext.socket.write("POST /codegate.v1.LoginService/SendLoginCode HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}");
    // No HTTP answer: at most a TLS alert.
    expect((await cleartext.closed).toString("latin1")).not.toContain("HTTP/1.1");

    const silent = await rawConnection();
    const dripping = await rawConnection();
    // The start of a TLS record of a ClientHello, one byte at a time.
    const hello = Buffer.from("16030100c8010000c40303", "hex");
    let i = 0;
    const drip = setInterval(() => (i < hello.length ? dripping.socket.write(hello.subarray(i, ++i)) : undefined), HEADERS_TIMEOUT_MS / 4);
    cleanups.push(() => clearInterval(drip));
    // Closed by the server's bound: this side never closes them (the test's timeout would end it).
    expect(await Promise.all([silent.closed, dripping.closed])).toHaveLength(2);
    clearInterval(drip);
    await stillServes();
  });

  it("keeps each handshake's bound its own when one client address and port reach two addresses of the server", async () => {
    // Two connections from 127.0.0.5 and one port, to 127.0.0.1 and 127.0.0.2: the same peer, two connections.
    // The first takes a port the kernel picks (a random one could be taken), the second reuses it; a
    // connection that fails says why rather than leaving the test to its timeout.
    const open = (host: string, localPort?: number) =>
      new Promise<{ socket: net.Socket; closed: Promise<void> }>((resolve, reject) => {
        const socket = net.connect({ host, port, localAddress: "127.0.0.5", localPort });
        cleanups.push(() => socket.destroy());
        const closed = new Promise<void>((resolveClosed) => socket.once("close", () => resolveClosed()));
        socket.once("error", (err) => reject(new Error(`connecting from 127.0.0.5:${localPort ?? "any"} to ${host}: ${err.message}`)));
        socket.once("connect", () => {
          socket.on("error", () => {});
          resolve({ socket, closed });
        });
      });
    const finished = await open("127.0.0.1");
    const dripping = await open("127.0.0.2", finished.socket.localPort);
    expect(dripping.socket.localPort).toBe(finished.socket.localPort);
    // The second drips the start of a ClientHello and never finishes it; the first then completes its handshake.
    const hello = Buffer.from("16030100c8010000c40303", "hex");
    let i = 0;
    const drip = setInterval(() => (i < hello.length ? dripping.socket.write(hello.subarray(i, ++i)) : undefined), HEADERS_TIMEOUT_MS / 4);
    cleanups.push(() => clearInterval(drip));
    const secured = tls.connect({ socket: finished.socket, ca: CA, servername: "localhost", ALPNProtocols: ["http/1.1"] });
    secured.on("error", () => {});
    expect(await Promise.race([new Promise((resolve) => secured.once("secureConnect", () => resolve("secured"))), finished.closed.then(() => "closed before the handshake")])).toBe("secured");
    // The dripping one is closed by its own bound (the test's timeout would end it otherwise)...
    await dripping.closed;
    clearInterval(drip);
    // ...and the finished one is not cut by any bound of a handshake: it answers requests, one every
    // fifth of the bound, until well past it.
    const answers: string[] = [];
    for (let n = 0; n < 8; n++) {
      secured.write("GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n");
      answers.push(await new Promise<string>((resolve) => (secured.once("data", (d: Buffer) => resolve(d.toString("latin1").split("\r\n")[0]!)), secured.once("close", () => resolve("closed")))));
      await pastDeadline(HEADERS_TIMEOUT_MS / 5);
    }
    expect(answers).toEqual(Array(8).fill("HTTP/1.1 200 OK"));
    secured.destroy();
    await stillServes();
  });

  it("closes an HTTP/2 connection whose client, past the handshake, sends no preface and settings within HEADERS_TIMEOUT", async () => {
    const secured = tls.connect({ host: "127.0.0.1", port, ca: CA, ALPNProtocols: ["h2"] });
    cleanups.push(() => secured.destroy());
    secured.on("error", () => {});
    // Read (and drop) what the server sends, so that its end is seen.
    secured.resume();
    const closed = new Promise<void>((resolve) => secured.once("close", () => resolve()));
    expect(await Promise.race([new Promise((resolve) => secured.once("secureConnect", () => resolve("secured"))), closed.then(() => "closed first")])).toBe("secured");
    expect(secured.alpnProtocol).toBe("h2");
    // Half the preface, then nothing (the test's timeout would end it if the server waited for IDLE_TIMEOUT).
    secured.write("PRI * HTTP/2.0\r\n");
    await closed;
    await stillServes();
  });

  it("refuses a TLS 1.2 client's renegotiation (each costs the server a handshake), and serves on", async () => {
    const secured = tls.connect({ host: "127.0.0.1", port, ca: CA, servername: "localhost", ALPNProtocols: ["http/1.1"], maxVersion: "TLSv1.2" });
    cleanups.push(() => secured.destroy());
    secured.on("error", () => {});
    await new Promise((resolve) => secured.once("secureConnect", resolve));
    expect(secured.getProtocol()).toBe("TLSv1.2");
    const closed = new Promise<string>((resolve) => secured.once("close", () => resolve("closed by the server")));
    const renegotiated = new Promise<string>((resolve) => {
      if (!secured.renegotiate({ rejectUnauthorized: true }, (err) => resolve(err ? err.message : "renegotiated"))) resolve("refused on the client side");
    });
    expect(await Promise.race([renegotiated, closed])).toBe("closed by the server");
    secured.destroy();
    await stillServes();
  });

  it("counts TLS connections against MAX_CONNECTIONS_PER_ADDRESS, and frees their places when they close", async () => {
    const open: tls.TLSSocket[] = [];
    const connect = () =>
      new Promise<tls.TLSSocket | undefined>((resolve) => {
        const socket = tls.connect({ host: "127.0.0.1", port, ca: CA, ALPNProtocols: ["http/1.1"] });
        socket.once("secureConnect", () => resolve(socket));
        socket.once("error", () => resolve(undefined));
        socket.once("close", () => resolve(undefined));
      });
    // Fixtures' connections of this file may still count a moment after they closed.
    await vi.waitFor(
      async () => {
        const socket = await connect();
        expect(socket).toBeDefined();
        open.push(socket!);
        expect(open).toHaveLength(4);
      },
      { timeout: 10_000, interval: 50 },
    );
    expect(await connect()).toBeUndefined();
    for (const s of open) s.destroy();
    await vi.waitFor(
      async () => {
        const again = await connect();
        expect(again).toBeDefined();
        again!.destroy();
      },
      { timeout: 5_000, interval: 50 },
    );
  });
});

/** A copy of the test certificate's pair in files of its own, for a test to renew; removed at the end of the file. */
function certificateFiles(): { certFile: string; keyFile: string } {
  const dir = mkdtempSync(join(tmpdir(), "codegate-tls-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const files = { certFile: join(dir, "cert.pem"), keyFile: join(dir, "key.pem") };
  copyFileSync(fixture("localhost.crt"), files.certFile);
  copyFileSync(fixture("localhost.key"), files.keyFile);
  return files;
}

describe("the certificate", () => {
  it("is taken again when its files change on disk, for new connections, and sessions made before resume; a pair that does not load keeps the one in use", async () => {
    const files = certificateFiles();
    const lines: string[] = [];
    const log = createLogger("info", new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
    // The listener as the server makes it, with the files looked at every 20 ms rather than every minute.
    const served = serverTls(files, log, { checkEveryMs: 20 });
    const { listener, port: listenerPort } = await okListener({ boundsMs: 1_000, tls: served, log });
    const subject = () =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: "127.0.0.1", port: listenerPort, ca: [CA, RENEWED_CA] }, () => {
          resolve(String(s.getPeerCertificate().subject.CN));
          s.destroy();
        });
        s.once("error", reject);
      });
    const session = (ticket?: Buffer) => tlsSession(listenerPort, { ticket, ca: [CA, RENEWED_CA] });
    try {
      expect(await subject()).toBe("localhost");
      const before = await session();
      // A certificate whose key is not its own: refused, the old pair stays.
      copyFileSync(fixture("renewed.crt"), files.certFile);
      await vi.waitFor(() => expect(lines.some((l) => l.includes("does not load"))).toBe(true), { timeout: 5_000, interval: 20 });
      expect(await subject()).toBe("localhost");
      copyFileSync(fixture("renewed.key"), files.keyFile);
      await vi.waitFor(async () => expect(await subject()).toBe("renewed.localhost"), { timeout: 5_000, interval: 20 });
      expect(lines.some((l) => l.includes("TLS certificate reloaded"))).toBe(true);
      // The session ticket keys outlive the renewal: a session made before it resumes.
      expect((await session(before.ticket)).reused).toBe(true);
    } finally {
      served.close();
      await listener.close(0);
    }
  });

  it("takes rotated session ticket keys at once: a ticket sealed before no longer resumes, one sealed after does, also across a later renewal", async () => {
    const files = certificateFiles();
    const log = createLogger("silent");
    // Rotated by the test, as serve's primary rotates a worker's; who follows its rotations counted.
    const keys = givenTicketKeys(randomBytes(48));
    let following = 0;
    const followed: TicketKeys = {
      current: keys.current,
      onChange(listener) {
        following++;
        const stop = keys.onChange(listener);
        return () => (following--, stop());
      },
    };
    const served = serverTls(files, log, { checkEveryMs: 20, ticketKeys: followed });
    const { listener, port: listenerPort } = await okListener({ boundsMs: 1_000, tls: served, log });
    const subject = () =>
      new Promise<string>((resolve, reject) => {
        const s = tls.connect({ host: "127.0.0.1", port: listenerPort, ca: [CA, RENEWED_CA] }, () => (resolve(String(s.getPeerCertificate().subject.CN)), s.destroy()));
        s.once("error", reject);
      });
    const session = async () => (await tlsSession(listenerPort)).ticket;
    const resumes = async (ticket: Buffer) => (await tlsSession(listenerPort, { ticket, ca: [CA, RENEWED_CA] })).reused;
    try {
      const before = await session();
      expect(await resumes(before)).toBe(true);
      keys.set(randomBytes(48));
      expect(await resumes(before)).toBe(false);
      const after = await session();
      expect(await resumes(after)).toBe(true);
      // A renewal keeps the keys in use, not those the TLS server was made with.
      copyFileSync(fixture("renewed.key"), files.keyFile);
      copyFileSync(fixture("renewed.crt"), files.certFile);
      await vi.waitFor(async () => expect(await subject()).toBe("renewed.localhost"), { timeout: 5_000, interval: 20 });
      expect(await resumes(after)).toBe(true);
      expect(await resumes(before)).toBe(false);
      expect(following).toBe(1);
    } finally {
      served.close();
      await listener.close(0);
    }
    // A closed listener follows the rotations no more (it would stay reachable through them).
    expect(following).toBe(0);
  });

  it("draws a new set of session ticket keys every TLS_TICKET_KEY_ROTATION when it has none given, 48 bytes each, the old ones wiped", async () => {
    // As `serve` in one process has it: the certificate's pair and its own keys, rotated every 20 ms here.
    const served = serverTls({ certFile: fixture("localhost.crt"), keyFile: fixture("localhost.key"), ticketKeyRotationMs: 20 }, createLogger("silent"));
    const seen = [served.ticketKeys.current()];
    const copies = [Buffer.from(seen[0]!)];
    served.ticketKeys.onChange((k) => (seen.push(k), copies.push(Buffer.from(k))));
    try {
      await vi.waitFor(() => expect(seen.length).toBeGreaterThanOrEqual(3), { timeout: 5_000, interval: 10 });
    } finally {
      served.close();
    }
    expect(copies.every((k) => k.length === 48)).toBe(true);
    expect(new Set(copies.map((k) => k.toString("hex"))).size).toBe(copies.length);
    expect(seen.slice(0, -1).every((k) => k.equals(Buffer.alloc(48)))).toBe(true);
  });

  it("looks at its files and rotates its keys until closed, reloads only files that changed, and stops telling a listener that unsubscribed", () => {
    const files = certificateFiles();
    const lines: string[] = [];
    const log = createLogger("info", new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }));
    const reloaded = () => lines.filter((l) => l.includes("TLS certificate reloaded")).length;
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] });
    try {
      const served = serverTls({ ...files, ticketKeyRotationMs: 20 }, log, { checkEveryMs: 10 });
      expect(vi.getTimerCount()).toBe(2);
      const heard: Buffer[] = [];
      const unheard: Buffer[] = [];
      served.ticketKeys.onChange((k) => heard.push(k));
      const unsubscribe = served.ticketKeys.onChange((k) => unheard.push(k));
      vi.advanceTimersByTime(20);
      unsubscribe();
      vi.advanceTimersByTime(20);
      expect([heard.length, unheard.length]).toEqual([2, 1]);
      // Files unchanged through four looks: nothing reloaded. Touched: reloaded once.
      expect(reloaded()).toBe(0);
      const later = new Date(Date.now() + 60_000);
      utimesSync(files.certFile, later, later);
      vi.advanceTimersByTime(40);
      expect(reloaded()).toBe(1);
      const rotations = heard.length;
      served.close();
      expect(vi.getTimerCount()).toBe(0);
      utimesSync(files.keyFile, later, later);
      vi.advanceTimersByTime(1_000);
      expect([heard.length, reloaded()]).toEqual([rotations, 1]);
    } finally {
      vi.useRealTimers();
    }
    expect(() => givenTicketKeys(randomBytes(80))).toThrow("TLS session ticket keys: expected 48 bytes, got 80");
  });

  it("closes the connections one address opens past MAX_TLS_HANDSHAKES_PER_ADDRESS in a second before their handshake, counted; cleartext ones are not counted", async () => {
    const log = createLogger("silent");
    const served = serverTls({ certFile: fixture("localhost.crt"), keyFile: fixture("localhost.key") }, log);
    const refused: string[] = [];
    const { port: listenerPort, close } = await okListener({ boundsMs: 10_000, tls: served, log, maxConnections: 20, maxTlsHandshakesPerAddress: 5, refused: (r) => refused.push(r) });
    const handshake = () =>
      new Promise<"secured" | "closed">((resolve) => {
        const s = tls.connect({ host: "127.0.0.1", port: listenerPort, ca: CA, servername: "localhost" });
        s.once("secureConnect", () => (resolve("secured"), s.destroy()));
        s.once("error", () => resolve("closed"));
        s.once("close", () => resolve("closed"));
      });
    try {
      // At once, as a client in a loop would: within one second.
      const outcomes = await Promise.all(Array.from({ length: 8 }, handshake));
      expect(outcomes.filter((o) => o === "secured")).toHaveLength(5);
      expect(refused).toEqual(Array(3).fill("max_tls_handshakes_per_address"));
      // The next second's are let through.
      await vi.waitFor(async () => expect(await handshake()).toBe("secured"), { timeout: 5_000, interval: 100 });
    } finally {
      served.close();
      await close();
    }
    const cleartext = await okListener({ boundsMs: 10_000, maxTlsHandshakesPerAddress: 1 });
    try {
      // A connection of its own each (no agent keeps one alive).
      const get = () =>
        new Promise<string>((resolve, reject) =>
          http.get({ host: "127.0.0.1", port: cleartext.port, path: "/", agent: false }, (res) => res.setEncoding("utf8").on("data", resolve)).once("error", reject),
        );
      expect(await Promise.all([get(), get(), get()])).toEqual(["ok", "ok", "ok"]);
    } finally {
      await cleartext.close();
    }
  });

  it("closes at once a connection whose ClientHello says it is longer than 16 KB, before the TLS server buffers it", async () => {
    // No bound of its own would close it within the test: only the length can.
    await withTlsListener(600_000, async (listenerPort) => {
      // A handshake record (16 KB) whose ClientHello declares 16 KB and one byte: 4 bytes of handshake header, then 100 of its body.
      const socket = net.connect({ host: "127.0.0.1", port: listenerPort });
      socket.on("error", () => {});
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      const header = Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x40, 0x01]);
      socket.write(Buffer.concat([header, Buffer.alloc(100)]));
      await closed;
      // One of 16 KB exactly goes on to the TLS server, which then waits for the rest of it.
      const fits = net.connect({ host: "127.0.0.1", port: listenerPort });
      fits.on("error", () => {});
      let fitsClosed = false;
      fits.once("close", () => (fitsClosed = true));
      fits.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x40, 0x00]), Buffer.alloc(100)]));
      // And a whole handshake still goes through.
      const secured = tls.connect({ host: "127.0.0.1", port: listenerPort, ca: CA, servername: "localhost" });
      secured.on("error", () => {});
      await new Promise((resolve) => secured.once("secureConnect", resolve));
      secured.destroy();
      expect(fitsClosed).toBe(false);
      fits.destroy();
    });
  });

  it("gives a session 300 s to be resumed in, not OpenSSL's two hours: its ticket's lifetime, over TLS 1.2 and 1.3", async () => {
    await withTlsListener(10_000, async (listenerPort) => {
      for (const maxVersion of ["TLSv1.2", "TLSv1.3"] as const) {
        // The lifetime the server gives its session, as the client keeps it (TLS 1.2 and 1.3 alike).
        const session = await new Promise<Buffer>((resolve, reject) => {
          const s = tls.connect({ host: "127.0.0.1", port: listenerPort, ca: CA, servername: "localhost", maxVersion });
          s.once("error", reject);
          s.once("session", (session: Buffer) => (resolve(session), s.destroy()));
        });
        expect(sessionTimeoutOf(session), maxVersion).toBe(300);
      }
    });
  });

  it("is refused at start when only one file is named, or the files cannot be read or do not match, naming the settings", async () => {
    expect(() => loadConfig({ TLS_CERT_FILE: fixture("localhost.crt") })).toThrow(/TLS_CERT_FILE, TLS_KEY_FILE: expected both/);
    expect(() => loadConfig({ TLS_KEY_FILE: fixture("localhost.key") })).toThrow(/TLS_CERT_FILE, TLS_KEY_FILE: expected both/);
    const log = createLogger("silent");
    expect(() => serverTls({ certFile: "/nonexistent/cert.pem", keyFile: fixture("localhost.key") }, log)).toThrow(/ - TLS_CERT_FILE: cannot read \/nonexistent\/cert.pem/);
    expect(() => serverTls({ certFile: fixture("localhost.crt"), keyFile: fixture("renewed.key") }, log)).toThrow(/ - TLS_CERT_FILE, TLS_KEY_FILE: expected a PEM certificate chain and its private key/);
    expect(loadConfig({ TLS_CERT_FILE: fixture("localhost.crt"), TLS_KEY_FILE: fixture("localhost.key"), PORT: "8443" }).publicUrl).toBe("https://localhost:8443");
  });

  it("resumes a session on whichever of serve's workers a connection lands, before and after the primary rotates the ticket keys they share", async () => {
    const workers = await startServerProcess({
      WORKERS: "2",
      COURIER_ENABLED: "false",
      TLS_CERT_FILE: fixture("localhost.crt"),
      TLS_KEY_FILE: fixture("localhost.key"),
      TLS_TICKET_KEY_ROTATION: "2s",
    });
    cleanups.push(() => workers.stop());
    const sessions = workerSessions(Number(new URL(workers.url).port));
    const before = await sessions.resumedOnBoth();
    // The keys that sealed it are forgotten at the rotation, in both workers...
    await vi.waitFor(async () => expect((await sessions.connect(before)).reused).toBe(false), { timeout: 30_000, interval: 100 });
    // ...which took the same new ones.
    await sessions.resumedOnBoth();
  });

  it("gives a worker that replaces a dead one the ticket keys its sibling uses: a session made before resumes on both", async () => {
    const workers = await startServerProcess({ WORKERS: "2", COURIER_ENABLED: "false", TLS_CERT_FILE: fixture("localhost.crt"), TLS_KEY_FILE: fixture("localhost.key") });
    cleanups.push(() => workers.stop());
    const sessions = workerSessions(Number(new URL(workers.url).port));
    const ticket = await sessions.resumedOnBoth();
    const apiWorkers = () => workersOf(workers.child.pid!).filter((w) => w.role === "api").map((w) => w.pid);
    const [victim] = apiWorkers();
    process.kill(victim!, "SIGKILL");
    await vi.waitFor(
      async () => {
        expect(apiWorkers()).toHaveLength(2);
        expect(apiWorkers()).not.toContain(victim);
        // Ready: every API worker, the new one too, answered that it serves.
        expect((await fetch(`${workers.opsUrl}/readyz`)).status).toBe(200);
      },
      { timeout: 20_000, interval: 100 },
    );
    // The rotation is an hour: the keys in use are still the ones that sealed the ticket.
    const resumed: boolean[] = [];
    for (let i = 0; i < 8; i++) resumed.push((await sessions.connect(ticket)).reused);
    expect(resumed).toEqual(Array(8).fill(true));
  });

  it("that does not load stops `serve` at once, with one message and exit code 2, alone or with workers (no crash loop)", async () => {
    const databaseUrl = await freshDatabase();
    for (const workers of ["1", "2"]) {
      const command = commandEnv(databaseUrl, { WORKERS: workers, PORT: "0", TLS_CERT_FILE: fixture("localhost.crt"), TLS_KEY_FILE: fixture("renewed.key") });
      try {
        const run = await new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) =>
          execFile(process.execPath, ["src/main.ts", "serve"], { env: command.env, timeout: 60_000 }, (err, stdout, stderr) =>
            resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
          ),
        );
        expect(run.code, `WORKERS=${workers}`).toBe(2);
        expect(run.stderr, `WORKERS=${workers}`).toContain("TLS_CERT_FILE, TLS_KEY_FILE: expected a PEM certificate chain and its private key");
        expect(run.stdout, `WORKERS=${workers}`).not.toContain("worker died");
      } finally {
        command.cleanup();
      }
    }
  });
});
