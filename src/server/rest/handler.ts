// The documented REST routes (gRPC transcoding of the google.api.http
// annotations, see routes.ts), served by the services themselves: a REST
// request becomes the RPC's typed request message, which runs through the very
// pipeline of the RPCs (server/rpc.ts): the request gate (admin bearer auth,
// before any body is read), protovalidate, logging and error sanitizing. The
// answer, or the error, is turned into the REST shapes here.
//
// A maintained library was looked for first. None serves google.api.http routes
// with Connect-ES v2: connect-es has no transcoding (the Connect FAQ points to
// vanguard-go and grpc-gateway, both Go); @exchangeunion/grpc-dynamic-gateway is
// an unmaintained express proxy for the deprecated native `grpc` module; Envoy's
// grpc_json_transcoder is a separate proxy; ts-proto's HTTP output is only
// client metadata. Hence this small adapter.
import http from "node:http";
import { isUtf8 } from "node:buffer";
import { fromJson, fromJsonString, toJson, type DescMethod, type JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext, type ContextValues, type MethodImplSpec, type ServiceImplSpec } from "@connectrpc/connect";
import { invokeUnaryImplementation } from "@connectrpc/connect/protocol";
import { ErrorInfoSchema, RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.ts";
import { attempt, raceAbort } from "../../lib/abort.ts";
import type { Logger } from "../../lib/log.ts";
import { requestContext } from "../../lib/request-context.ts";
import { callDeadlineKey, requestIdKey } from "../../services/context-keys.ts";
import { ERROR_DOMAIN, Reason, apiError, invalidArgument, reasonOf } from "../../services/errors.ts";
import { deadlineExceeded, openCall, type CallBounds } from "../call.ts";
import type { HttpRequest, HttpResponse } from "../http-routes.ts";
import type { RequestHandler } from "../listener.ts";
import { NOT_JSON, NOT_UTF8, type RpcPipeline } from "../rpc.ts";
import { bindRequest, matchRoute, restRoutes, type RouteMatch } from "./routes.ts";

export interface RestOptions {
  /** Largest accepted request body, as for the RPCs. */
  maxRequestBytes: number;
  /** Ends the calls in flight when the server stops. */
  shutdownSignal: AbortSignal;
  /** The same bounds as the RPCs they run. */
  bounds: CallBounds;
  log: Logger;
}

/** Without a RetryInfo detail, a 429 still tells the client when to come back. */
export const DEFAULT_RETRY_AFTER_SECONDS = 60;

/** google.rpc.Code to HTTP, as in Google's API design guide. */
const httpStatusOfCode: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

export interface RestErrorBody {
  error: { code: number; status: string; reason: string; message: string; request: string };
}

export interface RestAnswer {
  status: number;
  headers: Record<string, string>;
  body: RestErrorBody;
}

export function restErrorBody(status: number, reason: string, message: string, requestId: string): RestErrorBody {
  const statusText = http.STATUS_CODES[status] ?? (status === 499 ? "Client Closed Request" : "Unknown");
  return { error: { code: status, status: statusText, reason, message, request: requestId } };
}

/** An RPC error as a REST answer: its HTTP status, the documented body, and Retry-After. */
export function renderRestError(err: ConnectError, requestId: string): RestAnswer {
  const status = httpStatusOfCode[err.code] ?? 500;
  let message = err.rawMessage;
  // The RPC pipeline already replaces internal errors by a message of ours; one
  // that arrives here without our ErrorInfo was not made by us and may say too much.
  const ours = err.findDetails(ErrorInfoSchema).some((d) => d.domain === ERROR_DOMAIN);
  if (status >= 500 && status !== 501 && status !== 503 && !ours) {
    message = `internal error; quote request ${requestId} when reporting it`;
  }
  const headers: Record<string, string> = {};
  const delay = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
  if (delay) {
    headers["retry-after"] = String(Math.max(1, Math.ceil(Number(delay.seconds) + delay.nanos / 1e9)));
  } else if (status === 429) {
    headers["retry-after"] = String(DEFAULT_RETRY_AFTER_SECONDS);
  }
  return { status, headers, body: restErrorBody(status, reasonOf(err), message, requestId) };
}

/** Request headers that describe the REST request itself, not the caller. */
const ownHeaders = new Set([
  "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "expect", "trailer",
  "content-type", "content-length", "content-encoding", "accept-encoding",
]);
const isProtocolHeader = (name: string) => name.startsWith(":") || name.startsWith("connect-") || name.startsWith("grpc-");

/** The caller's headers (Authorization among them), as the RPC's context shows them. */
function callerHeaders(req: HttpRequest): Headers {
  const header = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || ownHeaders.has(name) || isProtocolHeader(name)) continue;
    for (const v of Array.isArray(value) ? value : [value]) {
      try {
        header.append(name, v);
      } catch {
        // A value Headers refuses is not one an RPC can use either.
      }
    }
  }
  return header;
}

const isJsonContentType = (value: string | undefined) => value !== undefined && /^application\/json\s*(;.*)?$/i.test(value);

/** Reads a body of at most `max` bytes from `chunks`; answers undefined past that, without reading on. */
async function readBody(chunks: AsyncIterable<Uint8Array>, max: number): Promise<Buffer | undefined> {
  const parts: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    size += chunk.byteLength;
    if (size > max) return undefined;
    parts.push(chunk);
  }
  return Buffer.concat(parts, size);
}

/** Request messages nest a few levels; a body nested deeper than this is refused before anything walks it recursively. */
const MAX_JSON_DEPTH = 32;

function nestedDeeperThan(value: JsonValue, max: number): boolean {
  const stack: [JsonValue, number][] = [[value, 1]];
  for (let item = stack.pop(); item; item = stack.pop()) {
    const [v, depth] = item;
    if (typeof v !== "object" || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

function send(res: HttpResponse, status: number, body: Uint8Array | RestErrorBody, headers: Record<string, string>, beforeEnd?: () => void): void {
  if (res.headersSent || res.writableEnded) return;
  const payload = body instanceof Uint8Array ? body : Buffer.from(JSON.stringify(body));
  (res as http.ServerResponse).writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": payload.byteLength,
    "cache-control": "no-store",
  });
  beforeEnd?.();
  res.end(payload);
}

/**
 * The request message of `method` from protobuf JSON; anything that does not fit it
 * is the caller's fault. JSON.parse kept the last of two equal keys in the body
 * (`text`): protobuf-es's own parse of it refuses them, as Connect's decoding does,
 * so that what a proxy in front read first is not overruled by what came after.
 */
function requestMessage(method: DescMethod, json: JsonValue, text?: string) {
  try {
    if (text !== undefined) fromJsonString(method.input, text, { ignoreUnknownFields: false });
    return fromJson(method.input, json, { ignoreUnknownFields: false });
  } catch (err) {
    throw apiError(Code.InvalidArgument, Reason.invalidArgument, err instanceof Error ? err.message : "the body does not fit the request");
  }
}

/**
 * Serves the REST routes of the unary RPCs of `services`, through the RPCs'
 * `pipeline`; any other request goes to `next`.
 */
export function restHandler(services: readonly ServiceImplSpec[], pipeline: RpcPipeline, opts: RestOptions, next: RequestHandler): RequestHandler {
  const specOf = new Map<DescMethod, MethodImplSpec & { kind: "unary" }>();
  for (const service of services) {
    for (const spec of Object.values(service.methods)) if (spec.kind === "unary") specOf.set(spec.method, spec);
  }
  const routes = restRoutes(specOf.keys());

  async function serve(req: HttpRequest, res: HttpResponse, match: RouteMatch, path: string, query: URLSearchParams, requestId: string, values: ContextValues) {
    const call = openCall(req, res, opts.bounds.unaryMs, deadlineExceeded(opts.bounds.unaryMs), opts.bounds.graceMs);
    values.set(callDeadlineKey, performance.now() + opts.bounds.unaryMs);
    const reply = (status: number, body: Uint8Array | RestErrorBody, headers: Record<string, string>) =>
      send(res, status, body, headers, call.closeAfterAnswer);
    const reject = (status: number, reason: string, message: string, headers: Record<string, string> = {}) => {
      opts.log.info({ requestId, rest: `${req.method} ${path}`, status, reason }, "rest request refused");
      reply(status, restErrorBody(status, reason, message, requestId), { "x-request-id": requestId, ...headers });
    };

    if ("allow" in match) {
      return reject(405, "METHOD_NOT_ALLOWED", `${path} takes ${match.allow.join(", ")}`, { allow: match.allow.join(", ") });
    }
    const { route, params } = match;
    if (route.body === "*") {
      if (!isJsonContentType(req.headers["content-type"])) {
        return reject(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be JSON: Content-Type: application/json");
      }
      const encoding = req.headers["content-encoding"];
      if (encoding !== undefined && encoding.toLowerCase() !== "identity") {
        return reject(415, "UNSUPPORTED_MEDIA_TYPE", `Content-Encoding ${encoding} is not supported`);
      }
    }
    const tooLarge = () =>
      reject(413, "REQUEST_TOO_LARGE", `the body is larger than ${opts.maxRequestBytes} bytes`, req.httpVersionMajor === 1 ? { connection: "close" } : {});
    if (route.body === "*" && Number(req.headers["content-length"] ?? 0) > opts.maxRequestBytes) return tooLarge();

    const spec = specOf.get(route.method)!;
    const ctx = createHandlerContext({
      service: spec.method.parent,
      method: spec.method,
      protocolName: "rest",
      requestMethod: req.method ?? "",
      url: `http://localhost${req.url ?? "/"}`,
      requestSignal: call.signal,
      shutdownSignal: opts.shutdownSignal,
      requestHeader: callerHeaders(req),
      contextValues: values,
    });
    const headers = () => answerHeaders(ctx.responseHeader, requestId);
    try {
      // The body is read only after the request gate: an unauthenticated admin request is refused without being parsed.
      await raceAbort(pipeline.requestGate(ctx), ctx.signal);
      let body: JsonValue | undefined;
      let text: string | undefined;
      if (route.body === "*") {
        const raw = await readBody(call.body, opts.maxRequestBytes);
        if (!raw) {
          ctx.abort(new ConnectError("request body too large", Code.ResourceExhausted));
          return tooLarge();
        }
        // Not read with replacement characters: a username with U+FFFD in it is not what was sent.
        if (!isUtf8(raw)) throw apiError(Code.InvalidArgument, Reason.invalidArgument, NOT_UTF8);
        try {
          text = raw.toString("utf8");
          body = JSON.parse(text) as JsonValue;
        } catch {
          throw apiError(Code.InvalidArgument, Reason.invalidArgument, NOT_JSON);
        }
        if (nestedDeeperThan(body, MAX_JSON_DEPTH)) throw invalidArgument("body", `JSON nested at most ${MAX_JSON_DEPTH} levels deep`);
      }
      const input = requestMessage(spec.method, bindRequest({ route, params }, query, body), text);
      const output = await invokeUnaryImplementation(spec, ctx, input, pipeline.interceptors);
      reply(route.successStatus, Buffer.from(JSON.stringify(toJson(spec.method.output, output))), headers());
    } catch (err) {
      // Reported by the pipeline: by its interceptors once the handler ran, by the gate's abort listener before.
      ctx.abort(err);
      const rendered = renderRestError(ConnectError.from(err), requestId);
      reply(rendered.status, rendered.body, { ...headers(), ...rendered.headers });
    } finally {
      ctx.abort();
    }
  }

  return (req, res) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const match = matchRoute(routes, req.method ?? "", path);
    if (!match) return next(req, res);
    const query = new URLSearchParams(q < 0 ? "" : url.slice(q + 1));
    const values = pipeline.contextValues(req);
    const requestId = values.get(requestIdKey);
    requestContext.run({ requestId }, () =>
      attempt(() => serve(req, res, match, path, query, requestId, values)).catch((err: unknown) => {
        opts.log.error({ requestId, rest: `${req.method} ${path}`, err }, "rest request failed");
        if (res.headersSent) res.destroy();
        else send(res, 500, restErrorBody(500, Reason.internal, `internal error; quote request ${requestId} when reporting it`, requestId), { "x-request-id": requestId });
      }),
    );
  };
}

/** What of the RPC's answer headers a REST client sees: not the RPC protocols' own. */
function answerHeaders(header: Headers, requestId: string): Record<string, string> {
  const out: Record<string, string> = {};
  header.forEach((value, name) => {
    if (name === "content-type" || name === "content-length" || name === "content-encoding") return;
    if (isProtocolHeader(name) || name.startsWith("trailer-")) return;
    out[name] = value;
  });
  out["x-request-id"] = requestId;
  return out;
}
