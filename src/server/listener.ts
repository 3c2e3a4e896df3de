// One listening address for every protocol: gRPC needs HTTP/2 (here h2c, HTTP/2
// without TLS), while curl and browsers speak HTTP/1.1. Node's cleartext HTTP/2
// server cannot take HTTP/1.1, so each new connection is routed by its first
// bytes: the HTTP/2 connection preface, or anything else for HTTP/1.1. With TLS,
// a connection is routed by the protocol its handshake agreed (ALPN): h2, else
// HTTP/1.1. Either way the connection's limits and bounds are the same.
import { randomUUID } from "node:crypto";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import type { Logger } from "../lib/log.ts";
import { connectionAdmission, type AdmissionOptions } from "./admission.ts";
import type { ServerTls } from "./tls.ts";

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** How long an idle session told to go (GOAWAY) gets before its connection is destroyed. */
const CLOSE_GRACE_MS = 1_000;
/**
 * How long a connection this side has ended (FIN sent) waits for the peer's end
 * before it is destroyed: the kernel may still be delivering the answer's tail,
 * which a destroy cut short once the peer sends anything more (RST).
 */
const LINGER_MS = 5_000;

/**
 * How long a TLS session may be resumed: a TLS 1.2 ticket carries the session's keys sealed
 * under the ticket keys (rotated every TLS_TICKET_KEY_ROTATION), so it should not be good for long.
 */
const TLS_SESSION_TIMEOUT_S = 300;

/** A TLS record's header (type, version, length) and a handshake message's (type, length): what tells a ClientHello's length. */
const CLIENT_HELLO_HEADER_BYTES = 5 + 4;
const TLS_HANDSHAKE_RECORD = 0x16;
const TLS_CLIENT_HELLO = 0x01;
/** The longest ClientHello taken, as long as a request head may be (Node's maxHeaderSize). */
const MAX_CLIENT_HELLO_BYTES = 16 * 1024;

/** The HTTP/2 streams of calls with bounds of their own that may be quiet for long (streaming RPCs). */
const longLivedStreams = new WeakSet<http2.Http2Stream>();

/**
 * Marks a request's HTTP/2 stream as a streaming call bounded by its caller
 * (STREAM_MAX_LIFETIME): it is not cut at the listener's request bound, and keeps
 * its session from being closed as idle while it is quiet. Nothing for HTTP/1.1.
 */
export function longLived(req: http.IncomingMessage | http2.Http2ServerRequest): void {
  if ("stream" in req) longLivedStreams.add(req.stream);
}

/** A Node.js server response of node:http or node:http2, with write() and writeHead() typed alike (as connect-node does). */
export type HttpResponse = (Omit<http.ServerResponse, "write"> | Omit<http2.Http2ServerResponse, "write">) & {
  write(chunk: string | Uint8Array, callback?: (err: Error | null | undefined) => void): boolean;
  writeHead(status: number, headers?: http.OutgoingHttpHeaders): unknown;
};

/** A request handler that both node:http and node:http2 accept. */
export type RequestHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: HttpResponse) => void;

/** The listener's bounds, and its limits on connections (admission.ts). */
export interface ListenerOptions extends Omit<AdmissionOptions, "log"> {
  /** A connection that has not sent its request head by then is closed. */
  headersTimeoutMs: number;
  /** A request whose body has not arrived by then is answered 408. */
  requestTimeoutMs: number;
  /** Idle keep-alive connections and HTTP/2 sessions are closed after this. */
  idleTimeoutMs: number;
  /** Streams one HTTP/2 connection may have open at once. */
  maxConcurrentStreams: number;
  log: Logger;
  /** TLS, with the certificate in use and its renewals; cleartext without. */
  tls?: ServerTls;
}

export interface Listener {
  server: net.Server;
  http1: http.Server;
  http2: http2.Http2Server;
  /** Stops accepting, lets open requests finish, then closes every connection. */
  close(graceMs: number): Promise<void>;
}

/**
 * The last line: a handler that throws synchronously (out of the request
 * event) would otherwise be an uncaught exception. Logged, and answered 500.
 */
function guarded(handler: RequestHandler, log: Logger): RequestHandler {
  return (req, res) => {
    try {
      handler(req, res);
    } catch (err) {
      const requestId = randomUUID();
      log.error({ requestId, err }, "request handler threw");
      if (res.headersSent) return void res.destroy();
      const body = JSON.stringify({ error: { code: 500, status: "Internal Server Error", reason: "INTERNAL", message: `internal error; quote request ${requestId} when reporting it`, request: requestId } });
      res.writeHead(500, { "content-type": "application/json", "content-length": Buffer.byteLength(body), "x-request-id": requestId });
      res.end(body);
    }
  };
}

/** Whether a connection's first bytes are the HTTP/2 preface, or the start of it. */
function startsLikePreface(head: Buffer): boolean {
  const n = Math.min(head.length, H2_PREFACE.length);
  return head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
}

/**
 * Reads a connection's first bytes until `decided` says they are enough to route it, then
 * pauses it and hands them to `route`, which gives them back (unshift) to whoever reads the
 * connection next: the HTTP/1.1 parser and Node's TLS socket read them from the socket's
 * buffer, and an HTTP/2 session takes what is buffered before it reads the native handle
 * itself (no JS stream between).
 */
function readFirstBytes(socket: net.Socket, decided: (head: Buffer) => boolean, route: (head: Buffer) => void): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    if (!decided(head)) return;
    socket.off("data", onData);
    socket.pause();
    route(head);
  };
  socket.on("data", onData);
}

export function createListener(unguarded: RequestHandler, opts: ListenerOptions): Listener {
  const handler = guarded(unguarded, opts.log);
  const http1 = http.createServer(
    {
      headersTimeout: opts.headersTimeoutMs,
      // How often the two timeouts are checked (Node's default is 30 s).
      connectionsCheckingInterval: Math.min(1000, opts.headersTimeoutMs),
      requestTimeout: opts.requestTimeoutMs,
      keepAliveTimeout: opts.idleTimeoutMs,
    },
    handler,
  );
  // This server never listens itself (connections come from the sniffer), but its
  // head and request timeouts are enforced by a timer that starts on "listening".
  http1.emit("listening");
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: opts.maxConcurrentStreams } }, handler);
  const sockets = new Set<net.Socket>();
  let closing = false;
  // While closing, every answer ends its connection.
  http1.on("request", (_req, res) => {
    if (closing) res.setHeader("connection", "close");
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  /** The socket being handed to the HTTP/2 server: its "session" event comes while it is. */
  let handing: net.Socket | undefined;
  h2.on("session", (session) => {
    // The session's own socket is a proxy that refuses destroy().
    const raw = handing;
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // A session with no stream open for IDLE_TIMEOUT is closed (GOAWAY), and destroyed if it
    // does not go; one with a streaming call open that has nothing to say (a health Watch with
    // no change) is not idle. The timer is this listener's, cleared when the session closes:
    // Node's session.setTimeout keeps a destroyed session, and its sockets, until it fires.
    let openStreams = 0;
    let idle: NodeJS.Timeout | undefined;
    const onIdle = () => {
      const kill = setTimeout(() => (session.destroy(), raw?.destroy()), CLOSE_GRACE_MS);
      session.close(() => clearTimeout(kill));
    };
    const armIdle = () => (idle = setTimeout(onIdle, opts.idleTimeoutMs));
    session.once("close", () => clearTimeout(idle));
    armIdle();
    session.on("stream", (stream) => {
      openStreams++;
      clearTimeout(idle);
      // Every stream ends by the request bound, but a streaming call (its own bound); a
      // route outside the RPCs that a client never lets answer (a zero window) too.
      const cut = setTimeout(() => {
        if (!longLivedStreams.has(stream)) stream.close(http2.constants.NGHTTP2_CANCEL);
      }, opts.requestTimeoutMs);
      stream.once("close", () => {
        clearTimeout(cut);
        if (--openStreams === 0 && !session.closed && !session.destroyed) armIdle();
      });
    });
    // The client's SETTINGS, which follow its preface, within HEADERS_TIMEOUT however slowly
    // they come (over TLS, the handshake's bound ends before the preface; in cleartext, the
    // sniffing below bounds the preface but not what follows it).
    const unsettled = setTimeout(() => (session.destroy(), raw?.destroy()), opts.headersTimeoutMs);
    session.once("remoteSettings", () => clearTimeout(unsettled));
    session.once("close", () => clearTimeout(unsettled));
    session.on("error", (err) => opts.log.debug({ err: err.message }, "http2 session error"));
  });
  h2.on("stream", (stream) => stream.on("error", (err) => opts.log.debug({ err: err.message }, "http2 stream error")));

  const admitted = connectionAdmission(opts, opts.tls !== undefined, () => sockets.size);

  /**
   * Once this side has ended a connection (an HTTP/2 session closed with GOAWAY, a
   * keep-alive connection timed out), Node waits for the peer to end it too. A peer
   * that never does would hold it, and its MAX_CONNECTIONS place, for ever.
   */
  const lingerOnceEnded = (socket: net.Socket) =>
    socket.once("finish", () => {
      const lingering = setTimeout(() => socket.destroy(), LINGER_MS);
      socket.once("close", () => clearTimeout(lingering));
    });

  // With TLS, admitted connections are secured by Node's TLS server (it listens on nothing), with the
  // certificate in use, and handed to the server of the protocol the handshake agreed: h2, else
  // HTTP/1.1 (a client without ALPN too). A handshake that does not finish, however slowly its bytes
  // come, has the preface's bound (HEADERS_TIMEOUT; the TLS server's own timeout is an idle one).
  const front =
    opts.tls &&
    tls.createServer({
      ...opts.tls.current(),
      ticketKeys: opts.tls.ticketKeys.current(),
      // Named, or OpenSSL's 7,200 s applies (Node's documented 300 s is not set by default).
      sessionTimeout: TLS_SESSION_TIMEOUT_S,
      ALPNProtocols: ["h2", "http/1.1"],
    });
  /**
   * The handshakes under way, by the connection's addresses and ports, both ends: the secured
   * socket is another object than the raw one, and only the four together name one connection
   * (a client may reach two addresses of this host from one address and port).
   */
  const handshakes = new Map<string, NodeJS.Timeout>();
  const connectionKey = (socket: net.Socket) => `${socket.localAddress}|${socket.localPort}|${socket.remoteAddress}|${socket.remotePort}`;
  const secure = (socket: net.Socket) => {
    const key = connectionKey(socket);
    const bound = setTimeout(() => socket.destroy(), opts.headersTimeoutMs);
    handshakes.set(key, bound);
    socket.once("close", () => (clearTimeout(bound), handshakes.get(key) === bound && handshakes.delete(key)));
    // OpenSSL buffers a ClientHello of up to about 128 KB while it comes: a connection that declares
    // one longer than MAX_CLIENT_HELLO_BYTES (browsers' are 2 KB) is closed before it can.
    readFirstBytes(
      socket,
      (head) => head.length >= CLIENT_HELLO_HEADER_BYTES,
      (head) => {
        const declared = head[0] === TLS_HANDSHAKE_RECORD && head[5] === TLS_CLIENT_HELLO ? head.readUIntBE(6, 3) : 0;
        if (declared > MAX_CLIENT_HELLO_BYTES) return void socket.destroy();
        socket.unshift(head);
        front!.emit("connection", socket);
      },
    );
  };
  let unfollowTicketKeys: (() => void) | undefined;
  if (front) {
    // A renewal's setSecureContext takes the ticket keys named to it, else those named at creation
    // (not those of a later setTicketKeys): without them it would bring back keys rotated out.
    opts.tls!.onReload((options) => front.setSecureContext({ ...options, ticketKeys: opts.tls!.ticketKeys.current() }));
    unfollowTicketKeys = opts.tls!.ticketKeys.onChange((keys) => front.setTicketKeys(keys));
    // A failed handshake (cleartext, a bad client hello): Node ends that connection; nothing else.
    front.on("tlsClientError", (err) => opts.log.debug({ err: err.message }, "tls handshake failed"));
    front.on("secureConnection", (secured: tls.TLSSocket) => {
      const key = connectionKey(secured);
      clearTimeout(handshakes.get(key));
      handshakes.delete(key);
      // A TLS 1.2 client could otherwise make the server do a handshake's work again and again on one
      // connection (Node allows 3 per 10 minutes): asking for one is an error that ends the connection.
      secured.disableRenegotiation();
      secured.on("error", () => secured.destroy());
      lingerOnceEnded(secured);
      if (secured.alpnProtocol === "h2") {
        handing = secured;
        h2.emit("connection", secured);
        handing = undefined;
      } else {
        http1.emit("connection", secured);
      }
    });
  }

  // No Nagle: small RPC answers must leave at once.
  const server = net.createServer({ noDelay: true }, (socket) => {
    if (!admitted(socket)) return void socket.destroy();
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    lingerOnceEnded(socket);
    socket.on("error", () => socket.destroy());
    if (front) return secure(socket);
    // A peer that connects and says nothing, or sends the HTTP/2 preface a byte at a
    // time, must not hold the socket: the whole preface within HEADERS_TIMEOUT (an
    // idle timeout would start again with each byte).
    const undecided = setTimeout(() => socket.destroy(), opts.headersTimeoutMs);
    socket.once("close", () => clearTimeout(undecided));
    readFirstBytes(
      socket,
      // Past the preface, or off it: decided.
      (head) => head.length >= H2_PREFACE.length || !startsLikePreface(head),
      (head) => {
        clearTimeout(undecided);
        socket.unshift(head);
        if (startsLikePreface(head)) {
          handing = socket;
          h2.emit("connection", socket);
          handing = undefined;
        } else {
          http1.emit("connection", socket);
          socket.resume();
        }
      },
    );
  });

  return {
    server,
    http1,
    http2: h2,
    async close(graceMs) {
      closing = true;
      unfollowTicketKeys?.();
      server.close(); // no new connections
      http1.close(); // closes idle keep-alive connections, stops its timers
      for (const session of sessions) session.close(); // GOAWAY: open streams finish
      const deadline = Date.now() + graceMs;
      // Connections that were busy become idle as their answers go out.
      while (sockets.size > 0 && Date.now() < deadline) {
        http1.closeIdleConnections();
        await new Promise((r) => setTimeout(r, 25));
      }
      for (const socket of sockets) socket.destroy();
    },
  };
}
