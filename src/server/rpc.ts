// The pipeline every RPC runs through, whether it arrives as gRPC, gRPC-Web,
// Connect (rpc-adapter.ts) or REST (rest/handler.ts): the values it starts
// with, the request gate (admin bearer auth, before any body is read), and the
// interceptors by which its outcome is counted, timed and logged, nothing
// internal reaches the caller, it ends within its bound with its work
// cancelled, and its request is validated against the protos' rules.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createContextKey, createContextValues, type ContextValues, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createValidateInterceptor } from "@connectrpc/validate";
import { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import { DeliveryService } from "../../gen/codegate/v1/delivery_pb.ts";
import { RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.ts";
import { attempt, raceAbort } from "../lib/abort.ts";
import { addressKey, clientAddress, type TrustedProxies } from "../lib/address.ts";
import { lineThrottle } from "../lib/line-throttle.ts";
import type { Logger } from "../lib/log.ts";
import { contextOf, inSpan, SpanKind, tracingEnabled } from "../lib/tracing.ts";
import type { AdminTokenVerifier } from "../rules/admin-tokens.ts";
import { adminTokenIdKey, clientAddressKey, requestIdKey } from "../services/context-keys.ts";
import { apiError, rateLimited, Reason, reasonOf } from "../services/errors.ts";
import { isDatabaseUnavailable, isStatementTimeout } from "../store/errors.ts";
import type { HttpRequest } from "./http-routes.ts";
import type { Metrics } from "./ops/metrics.ts";
import { StreamSlots } from "./stream-slots.ts";
import { requestValidator } from "./validation.ts";

/** Where a call is: refused by the gate, its request being decoded, or in its handler. */
interface CallState {
  phase: "gate" | "decode" | "handler";
}

/** The services that need an admin bearer token. */
const ADMIN_SERVICES = new Set([AdminService.typeName, DeliveryService.typeName]);

const callStateKey = createContextKey<CallState | undefined>(undefined, { description: "call state" });

/**
 * Admin authentications refused by their address's limit are logged at most this often (each
 * is counted, as resource_exhausted, in codegate_rpc_handled_total): past the limit, a client must
 * not decide how fast the log grows. Those within it are each logged.
 */
const LIMITED_AUTH_LOG_MS = 60_000;

/** A request id a client may choose: short, and safe in headers and logs. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

const internalError = (requestId: string) =>
  apiError(Code.Internal, Reason.internal, `internal error; quote request ${requestId} when reporting it`);

function databaseUnavailable(): ConnectError {
  const err = apiError(Code.Unavailable, Reason.unavailable, "the database is unavailable; try again in a moment");
  err.details.push({ desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(1000) }) });
  return err;
}

/**
 * What the caller gets for an error: ours as they are, a database out of reach
 * as `unavailable`, anything else as a bare `internal` with the request id. The
 * fault says how to log it: a bug at error level with its stack; the database
 * out of reach at warn, one line without a stack (an outage answers thousands).
 */
export function answerFor(err: unknown, requestId: string): { answer: ConnectError; fault: "caller" | "database" | "server" } {
  if (err instanceof ConnectError && err.code !== Code.Internal && err.code !== Code.Unknown) return { answer: err, fault: "caller" };
  const cause = err instanceof ConnectError && err.cause !== undefined ? err.cause : err;
  if (isDatabaseUnavailable(cause)) return { answer: databaseUnavailable(), fault: "database" };
  if (isStatementTimeout(cause)) return { answer: apiError(Code.DeadlineExceeded, Reason.deadlineExceeded, "the request took too long"), fault: "database" };
  return { answer: internalError(requestId), fault: "server" };
}

/**
 * Logs the outcome of a call by its fault. A call its client cancelled is logged at
 * debug: a client resets HTTP/2 streams far faster than it makes calls (a rapid
 * reset wrote one info line per stream), and codegate_rpc_handled_total counts them.
 */
function logOutcome(log: Logger, fields: Record<string, unknown>, err: unknown, fault: "caller" | "database" | "server", answer: ConnectError | undefined, msg: string): void {
  if (fault === "server") log.error({ ...fields, err }, `${msg}: failed`);
  else if (fault === "database") log.warn({ ...fields, cause: err instanceof Error ? err.message : String(err), errno: (err as { code?: unknown })?.code }, `${msg}: database unavailable`);
  else if (answer?.code === Code.Canceled) log.debug({ ...fields, reason: reasonOf(answer) }, msg);
  else log.info({ ...fields, reason: answer ? reasonOf(answer) : undefined }, msg);
}

/**
 * A span per call, continuing the caller's trace (`traceparent` in the HTTP
 * headers or gRPC metadata): the statements and the delivery of its mail are
 * its children. A stream's span covers its start, not its whole life.
 */
function tracingInterceptor(): Interceptor {
  return (next) => (req) =>
    inSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        parent: contextOf(req.header),
        attributes: { "rpc.system.name": "connectrpc", "rpc.method": `${req.service.typeName}/${req.method.name}`, "codegate.request_id": req.contextValues.get(requestIdKey) },
      },
      async (span) => {
        try {
          return await next(req);
        } catch (err) {
          span?.setAttribute("rpc.response.status_code", Code[err instanceof ConnectError ? err.code : Code.Internal]);
          throw err;
        }
      },
    );
}

/** Counts, times and logs every RPC by the code its caller gets; a stream counts when it ends. */
function outcomeInterceptor(app: { log: Logger; metrics: Metrics }): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = req.contextValues.get(requestIdKey);
    const rpc = `${req.service.name}/${req.method.name}`;
    const report = (err: unknown): ConnectError | undefined => {
      const ms = performance.now() - started;
      const { answer, fault } = err === undefined ? { answer: undefined, fault: "caller" as const } : answerFor(err, requestId);
      const grpcCode = answer ? Code[answer.code] : "OK";
      app.metrics.observeRpc(req.service.typeName, req.method.name, grpcCode, ms / 1000);
      const fields = { requestId, rpc, grpcCode, ms: +ms.toFixed(2), admin: req.contextValues.get(adminTokenIdKey) || undefined };
      logOutcome(app.log, fields, err, fault, answer, "rpc");
      return wellFormed(answer);
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw report(err);
    }
    if (!res.stream) {
      report(undefined);
      return res;
    }
    return { ...res, message: reportedStream(res.message, report) };
  };
}

async function* reportedStream<T>(messages: AsyncIterable<T>, report: (err: unknown) => ConnectError | undefined): AsyncGenerator<T> {
  let outcome: "open" | "done" | "failed" = "open";
  try {
    yield* messages;
    outcome = "done";
  } catch (err) {
    outcome = "failed";
    throw report(err);
  } finally {
    // Left open: the caller went away, and the stream was returned, not finished.
    if (outcome === "done") report(undefined);
    else if (outcome === "open") report(new ConnectError("the caller went away", Code.Canceled));
  }
}

/**
 * Ends every call at its signal (its bound, the caller leaving, the server
 * stopping) whatever its handler does, and caps the streams open at once. A
 * request stream that cannot be decoded is the caller's fault.
 */
function boundsInterceptor(streams: StreamSlots): Interceptor {
  return (next) => async (req) => {
    req.contextValues.get(callStateKey)!.phase = "handler";
    if (!req.stream) return raceAbort(attempt(() => next(req)), req.signal);
    const release = await streams.take(req.contextValues.get(adminTokenIdKey) !== "", req.contextValues.get(clientAddressKey), req.signal);
    try {
      const res = await next({ ...req, message: callerMessages(req.message) });
      if (!res.stream) {
        release();
        return res;
      }
      return { ...res, message: untilAborted(res.message, AbortSignal.any([req.signal, streams.ending]), release) };
    } catch (err) {
      release();
      throw err;
    }
  };
}

async function* callerMessages<T>(messages: AsyncIterable<T>): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (err) {
    throw asCallerFault(err);
  }
}

async function* untilAborted<T>(messages: AsyncIterable<T>, signal: AbortSignal, release: () => void): AsyncGenerator<T> {
  const it = messages[Symbol.asyncIterator]();
  try {
    for (;;) {
      const next = await raceAbort(it.next(), signal);
      if (next.done) return;
      yield next.value;
    }
  } finally {
    release();
    // Not awaited: a handler stuck in an await would hold this up.
    it.return?.()?.catch(() => {});
  }
}

const DECODE_FAILED = "the request could not be decoded: expected one well-formed message of the method's request type";

/** What a body that is not JSON, or not UTF-8, is told: over Connect (below) and over the REST routes alike. */
export const NOT_JSON = "the body is not valid JSON";
export const NOT_UTF8 = "the body is not valid UTF-8";

/**
 * connect-es raises its failures to decode a request (a malformed protobuf
 * body, a broken envelope, a missing message) as `internal` or `unimplemented`,
 * with the parser's own message; they are the caller's fault: `invalid_argument`,
 * with a message that says nothing of the parser. A body that is not JSON at all
 * is `invalid_argument` already, but quoting JSON.parse (its position and what it
 * expected there): it says only that, as the REST routes do. (What protobuf-es says
 * of JSON that parses, naming a field and what it expected, is kept.)
 */
function asCallerFault(err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  const notUtf8 = err.code === Code.InvalidArgument && causedBy(err, (e) => (e as { code?: unknown }).code === "ERR_ENCODING_INVALID_ENCODED_DATA");
  const notJson = err.code === Code.InvalidArgument && causedBy(err, (e) => e instanceof SyntaxError);
  if (notUtf8 || notJson || err.code === Code.Internal || err.code === Code.Unknown || err.code === Code.Unimplemented) {
    const message = notUtf8 ? NOT_UTF8 : notJson ? NOT_JSON : DECODE_FAILED;
    // Rewritten in place: connect-es serializes this very object after aborting the call with it.
    Object.assign(err as { -readonly [K in keyof ConnectError]: ConnectError[K] }, {
      code: Code.InvalidArgument,
      rawMessage: message,
      message: `[invalid_argument] ${message}`,
      cause: undefined,
    });
  }
  return err;
}

/** Whether an error on `err`'s chain of causes is one `is` tells. */
function causedBy(err: unknown, is: (e: Error) => boolean): boolean {
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 8; depth++) {
    if (is(e)) return true;
    e = e.cause;
  }
  return false;
}

/**
 * An error whose message is not well-formed UTF-16 (a parser quoting the
 * caller's lone surrogates) made connect-es's gRPC trailer (percent-encoded)
 * throw and the connection drop: its message is made well-formed, in place for
 * the same reason as above.
 */
function wellFormed<T>(err: T): T {
  if (err instanceof ConnectError && !err.rawMessage.isWellFormed()) {
    Object.assign(err as { -readonly [K in keyof ConnectError]: ConnectError[K] }, { rawMessage: err.rawMessage.toWellFormed(), message: err.message.toWellFormed() });
  }
  return err;
}

/**
 * Reports a call answered before its handler ran: refused by the gate, or its
 * request not decodable (then blamed on the caller) or not received in time.
 * connect-es aborts the call's context with the error it then sends.
 */
function reportEarlyAnswers(app: { log: Logger; metrics: Metrics }, ctx: HandlerContext, started: number): void {
  const state = ctx.values.get(callStateKey)!;
  ctx.signal.addEventListener(
    "abort",
    () => {
      if (state.phase === "handler") return;
      let reason: unknown = wellFormed(ctx.signal.reason);
      if (state.phase === "decode") reason = asCallerFault(reason);
      const requestId = ctx.values.get(requestIdKey);
      const { answer, fault } = answerFor(reason, requestId);
      const grpcCode = Code[answer.code];
      app.metrics.observeRpc(ctx.service.typeName, ctx.method.name, grpcCode, (performance.now() - started) / 1000);
      const fields = { requestId, rpc: `${ctx.service.name}/${ctx.method.name}`, grpcCode, phase: state.phase };
      logOutcome(app.log, fields, reason, fault, answer, "rpc before its handler");
    },
    { once: true },
  );
}

/** The reason a call that ends normally is aborted with: Node's default, made once. */
const CALL_ENDED = new DOMException("This operation was aborted", "AbortError");

/**
 * connect-es ends every call by aborting its context without a reason, for which
 * Node's AbortController builds a new DOMException, stack trace and all, on each
 * abort() (a gRPC call makes two): about 8 % of a gRPC call's CPU. A call that
 * ends so gets CALL_ENDED instead, the same kind of error. The context's abort()
 * is connect-es's own (HandlerContextController, not in its public types): where
 * it is missing, nothing changes.
 */
function endWithSharedReason(ctx: HandlerContext): void {
  const controller = ctx as HandlerContext & { abort?: (reason?: unknown) => void };
  const abort = controller.abort;
  if (typeof abort !== "function") return;
  controller.abort = (reason?: unknown) => abort.call(controller, reason === undefined ? CALL_ENDED : reason);
}

export interface PipelineOptions {
  log: Logger;
  metrics: Metrics;
  /** Peers whose X-Forwarded-For is believed (lib/address.ts). */
  trustedProxies: TrustedProxies;
  adminTokens: AdminTokenVerifier;
  /** Counts a failed admin authentication from a client address; answers how long it must wait (0: within its limit). */
  adminAuthFailed: (address: string) => Promise<number>;
  /** Streaming calls open at once, at most. */
  maxStreams: number;
  /** Streams without an admin token from one client address, at most. */
  maxStreamsPerAddress: number;
}

export interface RpcPipeline {
  /** The values a call starts with: its request id and its client address. */
  contextValues(req: HttpRequest): ContextValues;
  /** Runs before the request body is read. */
  requestGate(ctx: HandlerContext): Promise<void>;
  interceptors: Interceptor[];
  /** Ends every open stream (at shutdown, before unary calls in flight are waited for). */
  endStreams(): void;
}

export function rpcPipeline(opts: PipelineOptions): RpcPipeline {
  const { log } = opts;
  const streams = new StreamSlots(opts.maxStreams, opts.maxStreamsPerAddress);
  const mayLogLimitedAuth = lineThrottle<"limited">(LIMITED_AUTH_LOG_MS);
  const authFailed = (fields: Record<string, unknown>, limited: boolean) => {
    if (!limited) return void log.warn({ ...fields, limited }, "admin authentication failed");
    const heldBack = mayLogLimitedAuth("limited");
    if (heldBack !== undefined) log.warn({ ...fields, limited, limitedSinceLastLine: heldBack }, "admin authentication failed");
  };
  return {
    contextValues(req) {
      const values = createContextValues();
      const asked = req.headers["x-request-id"];
      values.set(requestIdKey, typeof asked === "string" && CLIENT_REQUEST_ID.test(asked) ? asked : randomUUID());
      // X-Forwarded-For whole: it is read from the right; Node bounds the size of a request head.
      const address = clientAddress(req.socket.remoteAddress ?? "", String(req.headers["x-forwarded-for"] ?? ""), opts.trustedProxies);
      values.set(clientAddressKey, addressKey(address));
      values.set(callStateKey, { phase: "gate" });
      return values;
    },
    // No admin request body is parsed unauthenticated.
    async requestGate(ctx) {
      endWithSharedReason(ctx);
      const requestId = ctx.values.get(requestIdKey);
      ctx.responseHeader.set("x-request-id", requestId);
      reportEarlyAnswers(opts, ctx, performance.now());
      if (ADMIN_SERVICES.has(ctx.service.typeName)) {
        const principal = await opts.adminTokens.verify(ctx.requestHeader.get("authorization")).catch((err: unknown) => {
          log.error({ requestId, err }, "admin token check failed");
          throw answerFor(err, requestId).answer;
        });
        if (!principal) {
          const address = ctx.values.get(clientAddressKey);
          const waitMs = await opts.adminAuthFailed(address);
          authFailed({ requestId, address, rpc: `${ctx.service.name}/${ctx.method.name}` }, waitMs > 0);
          if (waitMs > 0) throw rateLimited(waitMs);
          throw apiError(Code.Unauthenticated, Reason.unauthenticated, "a valid admin token is required: Authorization: Bearer <admin token>");
        }
        if (principal.scope === "delivery" && ctx.service.typeName !== DeliveryService.typeName) {
          log.warn({ requestId, tokenId: principal.tokenId, rpc: `${ctx.service.name}/${ctx.method.name}` }, "delivery token refused outside DeliveryService");
          throw apiError(Code.PermissionDenied, Reason.permissionDenied, "this token may call DeliveryService only; the call needs an admin token");
        }
        ctx.values.set(adminTokenIdKey, principal.tokenId);
      }
      ctx.values.get(callStateKey)!.phase = "decode";
    },
    // Tracing off (the default), the call does not even pass through its interceptor.
    interceptors: [...(tracingEnabled() ? [tracingInterceptor()] : []), outcomeInterceptor(opts), boundsInterceptor(streams), createValidateInterceptor({ validator: requestValidator() })],
    endStreams: () => streams.endAll(),
  };
}
