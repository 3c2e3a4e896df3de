// A closed HTTP/2 connection is let go at once, not at IDLE_TIMEOUT: a client that
// opens and closes connections in a loop must not pile them up in the server's memory
// (Node's own session timeout, once armed, kept a destroyed session and its sockets
// reachable until it fired: about 7 kB each, 277k of them in a minute of h2c).
// The listener runs in this process, so that the test can ask the garbage collector.
import { afterEach, describe, expect, it, vi } from "vitest";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { readFileSync } from "node:fs";
import v8 from "node:v8";
import vm from "node:vm";
import { createLogger } from "../src/lib/log.ts";
import type { Listener } from "../src/server/listener.ts";
import { serverTls } from "../src/server/tls.ts";
import { okListener } from "./support/listener.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

const fixture = (name: string) => new URL(`./fixtures/tls/${name}`, import.meta.url).pathname;
const CONNECTIONS = 20;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listening(secured: boolean): Promise<{ listener: Listener; url: string }> {
  const tls = secured ? serverTls({ certFile: fixture("localhost.crt"), keyFile: fixture("localhost.key") }, createLogger("silent")) : undefined;
  // Bounds far past the test: what is let go is let go because it closed.
  const { listener, port, close } = await okListener({ boundsMs: 600_000, tls, maxConnections: 1_000 });
  cleanups.push(async () => (tls?.close(), await close()));
  return { listener, url: `${secured ? "https" : "http"}://127.0.0.1:${port}` };
}

describe.each([
  ["cleartext (h2c)", false],
  ["TLS", true],
])("a closed HTTP/2 connection, %s", (_name, secured) => {
  it("is let go at once, not kept until IDLE_TIMEOUT", async () => {
    const { listener, url } = await listening(secured);
    const { sessions, closed } = watched(listener);
    for (let i = 0; i < CONNECTIONS; i++) {
      const client = http2.connect(url, secured ? { ca: readFileSync(fixture("localhost.crt")) } : {});
      client.on("error", () => {});
      const req = client.request({ ":path": "/" });
      req.resume();
      await new Promise((resolve) => req.once("close", resolve));
      client.destroy();
    }
    await allLetGo(sessions, closed);
  });

  it("is let go at once when its client sent the preface and closed before its settings", async () => {
    const { listener, url } = await listening(secured);
    const { sessions, closed } = watched(listener);
    const { port } = new URL(url);
    for (let i = 0; i < CONNECTIONS; i++) {
      const socket = secured
        ? tls.connect({ host: "127.0.0.1", port: Number(port), ca: readFileSync(fixture("localhost.crt")), servername: "localhost", ALPNProtocols: ["h2"] })
        : net.connect({ host: "127.0.0.1", port: Number(port) });
      socket.on("error", () => {});
      await new Promise((resolve) => socket.once(secured ? "secureConnect" : "connect", resolve));
      socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
      // Its session exists once the server has read the preface.
      await vi.waitFor(() => expect(sessions).toHaveLength(i + 1), { timeout: 5_000, interval: 5 });
      socket.destroy();
    }
    await allLetGo(sessions, closed);
  });
});

describe("a connection this side ended", () => {
  it("is let go as soon as its client closes it too, not held for the linger (5 s) meant for clients that never do", async () => {
    const { listener, url } = await listening(false);
    const sockets: WeakRef<net.Socket>[] = [];
    let closed = 0;
    listener.server.on("connection", (socket: net.Socket) => {
      sockets.push(new WeakRef(socket));
      socket.once("close", () => closed++);
    });
    for (let i = 0; i < CONNECTIONS; i++) {
      const client = net.connect({ host: "127.0.0.1", port: Number(new URL(url).port) });
      client.on("error", () => {});
      client.resume();
      client.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      // The answer, then this side's end of the connection; then the client's.
      await new Promise((resolve) => client.once("end", resolve));
      client.destroy();
    }
    // Well under the linger: a socket it held would still be reachable.
    await allLetGo(sockets, () => closed, 3_000);
  });
});

/** The listener's HTTP/2 sessions from now on, each held weakly, and how many of them have closed. */
function watched(listener: Listener): { sessions: WeakRef<http2.ServerHttp2Session>[]; closed: () => number } {
  const sessions: WeakRef<http2.ServerHttp2Session>[] = [];
  let closed = 0;
  listener.http2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.push(new WeakRef(session));
    session.once("close", () => closed++);
  });
  return { sessions, closed: () => closed };
}

/** Every one closes, and the collector can take each of them, within `timeoutMs`. */
async function allLetGo(held: WeakRef<object>[], closed: () => number, timeoutMs = 10_000): Promise<void> {
  await vi.waitFor(() => expect(closed()).toBe(CONNECTIONS), { timeout: timeoutMs });
  expect(held).toHaveLength(CONNECTIONS);
  await vi.waitFor(
    async () => {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
      expect(held.filter((s) => s.deref() !== undefined)).toHaveLength(0);
    },
    { timeout: timeoutMs, interval: 100 },
  );
}
