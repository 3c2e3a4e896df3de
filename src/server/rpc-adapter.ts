// Serves the Connect router's RPCs (gRPC, gRPC-Web and Connect) from node:http
// and node:http2, in place of connect-node's adapter, which we cannot bound:
// it builds the request URL from the Host header (and throws, out of the
// request listener, when an HTTP/1.0 request has none), has no deadline of its
// own, and its response writer never resolves (it waits for an "end" event that
// a ServerResponse does not emit). Here every call is opened by openCall()
// (call.ts), which owns its bound, its signal and its body, and runs inside
// requestContext so that anything it leaves behind is reported with its id.
// A unary gRPC or Connect call in the common case is served by grpc-unary.ts or
// connect-unary.ts instead of connect-es's handlers, through the same gate and
// interceptors.
import type http from "node:http";
import { createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type ContextValues, type ServiceImplSpec } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { attempt } from "../lib/abort.ts";
import type { Logger } from "../lib/log.ts";
import { requestContext } from "../lib/request-context.ts";
import { callDeadlineKey } from "../services/context-keys.ts";
import { deadlineExceeded, openCall, streamExpired, type CallBounds } from "./call.ts";
import { connectUnaryHandler } from "./connect-unary.ts";
import { grpcUnaryHandler } from "./grpc-unary.ts";
import type { HttpRequest, HttpResponse } from "./http-routes.ts";
import { longLived, type RequestHandler } from "./listener.ts";
import type { UnaryFastPath, WholeAnswer } from "./unary.ts";

export interface RpcAdapterOptions extends ConnectRouterOptions {
  services: readonly ServiceImplSpec[];
  /** The values a call starts with; must hold the request id under `requestIdOf`. */
  contextValues: (req: HttpRequest) => ContextValues;
  requestIdOf: (values: ContextValues) => string;
  bounds: CallBounds;
  /** Requests for anything but an RPC. */
  fallback: RequestHandler;
  log: Logger;
}

/** Serves the RPCs of `opts.services`; any other request goes to `opts.fallback`. */
export function createRpcAdapter(opts: RpcAdapterOptions): RequestHandler {
  const router = createConnectRouter(opts);
  for (const spec of opts.services) register(router, spec);
  const byPath = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const unary = new Map<string, UnaryFastPath>();
  for (const spec of opts.services) {
    for (const m of Object.values(spec.methods)) {
      if (m.kind !== "unary") continue;
      const [grpc, connect] = [grpcUnaryHandler(m, opts), connectUnaryHandler(m, opts)];
      unary.set(`/${spec.service.typeName}/${m.method.name}`, (req) => grpc(req) ?? connect(req));
    }
  }
  const { bounds, log } = opts;

  function serve(handler: UniversalHandler, req: HttpRequest, res: HttpResponse, values: ContextValues): void {
    if (handler.method.methodKind === "bidi_streaming" && req.httpVersionMajor === 1) {
      // connect-es answers 505, a server error, for what is the client's choice of protocol.
      const body = JSON.stringify({ code: "invalid_argument", message: `${handler.method.name} streams both ways, which needs HTTP/2` });
      res.writeHead(400, { "content-type": "application/json", "content-length": Buffer.byteLength(body), connection: "close" });
      res.end(body);
      return;
    }
    const streaming = handler.method.methodKind !== "unary";
    if (streaming) longLived(req);
    const header = requestHeaders(req);
    const bound = streaming ? bounds.streamMs : bounds.unaryMs;
    const asked = clientDeadlineMs(header);
    // A server stream starts once its one request message has come, which gets a unary call's time.
    const requestMs = handler.method.methodKind === "server_streaming" ? bounds.unaryMs : Infinity;
    const [limitMs, expired] = asked !== undefined && asked < bound ? [asked, deadlineExceeded(asked)] : [bound, streaming ? streamExpired(bound) : deadlineExceeded(bound)];
    const call = openCall(req, res, limitMs, expired, bounds.graceMs, requestMs);
    values.set(callDeadlineKey, performance.now() + Math.min(asked ?? bound, bound));
    const request = {
      httpVersion: req.httpVersion,
      method: req.method ?? "",
      // The authority plays no part in routing; the path was matched above.
      url: `http://localhost${req.url}`,
      header,
      body: call.body,
      signal: call.signal,
      contextValues: values,
    };
    const unaryAnswer = unary.get(handler.requestPath)?.(request);
    const answered = unaryAnswer
      ? unaryAnswer.then((answer) => writeWhole(answer, res, call.closeAfterAnswer))
      : attempt(() => handler(request)).then((answer) =>
          streaming && handler.method.methodKind !== "client_streaming" ? writeStream(answer, res, call.closeAfterAnswer) : writeWhole(answer, res, call.closeAfterAnswer),
        );
    answered.catch((err: unknown) => {
      log.error({ requestId: opts.requestIdOf(values), rpc: handler.requestPath, err }, "rpc could not be answered");
      res.destroy();
    });
  }

  return (req, res) => {
    const url = req.url ?? "";
    const q = url.indexOf("?");
    const handler = byPath.get(q < 0 ? url : url.slice(0, q));
    if (!handler) return opts.fallback(req, res);
    const values = opts.contextValues(req);
    requestContext.run({ requestId: opts.requestIdOf(values) }, () => serve(handler, req, res, values));
  };
}

/** Registers each method of a service spec on the router. */
function register(router: ConnectRouter, spec: ServiceImplSpec): void {
  for (const m of Object.values(spec.methods)) {
    // One case per kind: each narrows the method and its implementation together.
    switch (m.kind) {
      case "unary":
        router.rpc(m.method, m.impl);
        break;
      case "server_streaming":
        router.rpc(m.method, m.impl);
        break;
      case "client_streaming":
        router.rpc(m.method, m.impl);
        break;
      case "bidi_streaming":
        router.rpc(m.method, m.impl);
        break;
    }
  }
}

/** The request's headers as a Headers object, without HTTP/2 pseudo-headers. */
function requestHeaders(req: HttpRequest): Headers {
  const header = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name.startsWith(":")) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      try {
        header.append(name, v);
      } catch {
        // A value the Headers class refuses: no RPC reads it.
      }
    }
  }
  return header;
}

const grpcTimeoutUnitMs: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 1e-3, n: 1e-6 };

/**
 * The deadline a client asked for (grpc-timeout, connect-timeout-ms; the shorter
 * when it names both), taken out of the headers: the call's own bound enforces it,
 * so that the one signal of a call is its only deadline (Connect would arm a timer
 * of any length a client names, and Node cuts timers past 2^31 ms to 1 ms; a timer
 * of Connect's that fired while it decoded the body made the decoder's error an
 * `internal` answer). A malformed value is left for Connect to refuse.
 */
function clientDeadlineMs(header: Headers): number | undefined {
  let deadline: number | undefined;
  const grpc = /^(\d{1,8})([HMSmun])$/.exec(header.get("grpc-timeout") ?? "");
  if (grpc) {
    header.delete("grpc-timeout");
    deadline = Number(grpc[1]) * grpcTimeoutUnitMs[grpc[2]];
  }
  const connect = /^\d{1,10}$/.exec(header.get("connect-timeout-ms") ?? "");
  if (connect) {
    header.delete("connect-timeout-ms");
    deadline = Math.min(deadline ?? Infinity, Number(connect[0]));
  }
  return deadline;
}

/**
 * Every RPC answer's head starts with these: answers carry proof tokens and
 * administrators' recovery codes, which no cache may keep and no browser sniff.
 */
const ANSWER_HEADERS: http.OutgoingHttpHeaders = { "cache-control": "no-store", "x-content-type-options": "nosniff" };

function nodeHeaders(header: Headers | undefined, first: http.OutgoingHttpHeaders = {}): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = { ...first };
  header?.forEach((value, name) => {
    out[name] = value;
  });
  return out;
}

/** Resolves true once `res` can take more, false if it closes first (the client went away). */
function drained(res: HttpResponse): Promise<boolean> {
  if (res.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const settle = (more: boolean) => {
      res.off("drain", onDrain);
      res.off("close", onClose);
      resolve(more);
    };
    const onDrain = () => settle(true);
    const onClose = () => settle(false);
    res.once("drain", onDrain);
    res.once("close", onClose);
  });
}

/**
 * Writes the answer of a call with one response message: all of it in one go,
 * so that its head, body and trailers leave together (over HTTP/2 they went out
 * in two writes, each waking the client: a third of a gRPC call's CPU).
 */
async function writeWhole(answer: UniversalServerResponse | WholeAnswer, res: HttpResponse, beforeEnd: () => void): Promise<void> {
  res.on("error", () => {});
  let body: Uint8Array;
  if (answer.body instanceof Uint8Array) body = answer.body;
  else {
    const chunks: Uint8Array[] = [];
    if (answer.body) for await (const chunk of answer.body) chunks.push(chunk);
    body = Buffer.concat(chunks);
  }
  if (res.destroyed) return;
  const headers = nodeHeaders(answer.header, ANSWER_HEADERS);
  if (!answer.trailer) headers["content-length"] = body.byteLength;
  (res as http.ServerResponse).writeHead(answer.status, headers);
  if (answer.trailer) res.addTrailers(nodeHeaders(answer.trailer));
  beforeEnd();
  res.end(body);
}

/** Writes a streamed answer: its head after the first message (handlers may set headers until then), each message as it comes, its trailers. */
async function writeStream(answer: UniversalServerResponse, res: HttpResponse, beforeEnd: () => void): Promise<void> {
  // Write errors surface through write() and "close"; an "error" event must not become an uncaught exception.
  res.on("error", () => {});
  const it = answer.body?.[Symbol.asyncIterator]();
  try {
    let chunk = it ? await it.next() : undefined;
    if (res.destroyed) return;
    (res as http.ServerResponse).writeHead(answer.status, nodeHeaders(answer.header, ANSWER_HEADERS));
    while (chunk && !chunk.done) {
      // A client that went away is no error of the call's: nobody is left to answer.
      if (!res.write(chunk.value) && !(await drained(res))) return;
      chunk = await it!.next();
    }
    if (answer.trailer) res.addTrailers(nodeHeaders(answer.trailer));
    beforeEnd();
    res.end();
  } finally {
    it?.return?.().catch(() => {});
  }
}
