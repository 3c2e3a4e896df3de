// The listener as the server makes it, in the test's own process, answering "ok" to every
// request: for tests that look inside it (its TLS contexts and sessions, what it keeps in memory).
import type net from "node:net";
import { parseTrustedProxies } from "../../src/lib/address.ts";
import { createLogger, type Logger } from "../../src/lib/log.ts";
import type { RefusalReason } from "../../src/server/admission.ts";
import { createListener, type Listener } from "../../src/server/listener.ts";
import type { ServerTls } from "../../src/server/tls.ts";

export interface OkListener {
  listener: Listener;
  port: number;
  close(): Promise<void>;
}

/** Listening on a free loopback port; `boundsMs` is its HEADERS_TIMEOUT, request bound and IDLE_TIMEOUT alike. */
export async function okListener(opts: {
  boundsMs: number;
  tls?: ServerTls;
  log?: Logger;
  maxConnections?: number;
  maxTlsHandshakesPerAddress?: number;
  refused?: (reason: RefusalReason) => void;
}): Promise<OkListener> {
  const listener = createListener((_req, res) => res.end("ok"), {
    headersTimeoutMs: opts.boundsMs,
    requestTimeoutMs: opts.boundsMs,
    idleTimeoutMs: opts.boundsMs,
    maxConnections: opts.maxConnections ?? 10,
    maxConnectionsPerAddress: opts.maxConnections ?? 10,
    maxTlsHandshakesPerAddress: opts.maxTlsHandshakesPerAddress,
    trustedProxies: parseTrustedProxies([]).proxies,
    maxConcurrentStreams: 10,
    log: opts.log ?? createLogger("silent"),
    refused: opts.refused ?? (() => {}),
    tls: opts.tls,
  });
  await new Promise<void>((resolve) => listener.server.listen(0, "127.0.0.1", resolve));
  return { listener, port: (listener.server.address() as net.AddressInfo).port, close: () => listener.close(0) };
}
