// Requests as a hostile client writes them: raw HTTP/1.x bytes, HTTP/2 streams
// whose body may never end, gRPC envelopes with any length and flags, and raw
// HTTP/2 frames. Each answers what came back and how the exchange ended.
import http2 from "node:http2";
import net from "node:net";

export interface RawAnswer {
  /** Everything the server sent. */
  bytes: Buffer;
  /** The status of the first HTTP/1.x status line, if any. */
  status: number | undefined;
  /** The server closed the connection (rather than the client giving up). */
  closedByServer: boolean;
}

/** Writes `request` to a fresh connection and reads until the server closes it or `waitMs` passes. */
export function rawExchange(url: string, request: Buffer | string, waitMs: number): Promise<RawAnswer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(Number(port), hostname, () => socket.write(request));
    const finish = (closedByServer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      const bytes = Buffer.concat(chunks);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(bytes.toString("latin1"));
      resolve({ bytes, status: m ? Number(m[1]) : undefined, closedByServer });
    };
    const timer = setTimeout(() => finish(false), waitMs);
    socket.on("data", (c) => chunks.push(c));
    socket.once("close", () => finish(true));
    socket.on("error", () => {});
  });
}

export interface H2Answer {
  status: number | undefined;
  headers: http2.IncomingHttpHeaders;
  trailers: http2.IncomingHttpHeaders;
  body: Buffer;
  /** RST_STREAM code when the stream was reset; 0 for a clean end. */
  rstCode: number;
  /** The stream closed within the wait. */
  closed: boolean;
}

/**
 * One HTTP/2 request on its own session. `end: false` leaves the request body
 * open (a client that never finishes); the answer comes when the stream closes
 * or `waitMs` passes.
 */
export function h2Request(
  url: string,
  headers: http2.OutgoingHttpHeaders,
  body: Buffer | string,
  opts: { end?: boolean; waitMs: number },
): Promise<H2Answer> {
  return new Promise((resolve) => {
    const session = http2.connect(url);
    session.on("error", () => {});
    const stream = session.request({ ":method": "POST", ...headers }, { endStream: false });
    const chunks: Buffer[] = [];
    let answer: Omit<H2Answer, "rstCode" | "closed" | "body"> = { status: undefined, headers: {}, trailers: {} };
    stream.on("response", (h) => (answer = { ...answer, status: Number(h[":status"]), headers: h }));
    stream.on("trailers", (t) => (answer = { ...answer, trailers: t }));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", () => {});
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      const rstCode = stream.rstCode ?? 0;
      session.destroy();
      resolve({ ...answer, body: Buffer.concat(chunks), rstCode, closed });
    };
    const timer = setTimeout(() => finish(false), opts.waitMs);
    stream.once("close", () => finish(true));
    if (body.length) stream.write(body);
    if (opts.end !== false) stream.end();
  });
}

/** A gRPC length-prefixed message: flags, then the declared length (by default, the true one). */
export function envelope(payload: Uint8Array, flags = 0, declaredLength = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(declaredLength >>> 0, 1);
  return Buffer.concat([head, payload]);
}

export const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/** One HTTP/2 frame, with any declared length, type, flags and stream. */
export function h2Frame(type: number, flags: number, streamId: number, payload: Buffer, declaredLength = payload.length): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(declaredLength & 0xffffff, 0, 3);
  head.writeUInt8(type & 0xff, 3);
  head.writeUInt8(flags & 0xff, 4);
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK header block of literal fields without indexing or Huffman coding (RFC 7541 §6.2.2). */
export function hpackLiterals(headers: [string, string][]): Buffer {
  const parts: Buffer[] = [];
  const length = (n: number) => {
    // 7-bit prefix integers, as long strings need.
    if (n < 127) return Buffer.from([n]);
    const out = [127];
    for (n -= 127; n >= 128; n >>= 7) out.push((n & 0x7f) | 0x80);
    out.push(n);
    return Buffer.from(out);
  };
  for (const [name, value] of headers) {
    parts.push(Buffer.from([0x00]), length(Buffer.byteLength(name)), Buffer.from(name), length(Buffer.byteLength(value)), Buffer.from(value));
  }
  return Buffer.concat(parts);
}
