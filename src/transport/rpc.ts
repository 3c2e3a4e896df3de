// The Connect router: every service on one handler for gRPC, gRPC-Web and
// Connect, with the cross-cutting rules applied to every RPC.
import { randomUUID } from "node:crypto";
import { Code, ConnectError, createContextKey, createContextValues, type ConnectRouter, type ContextValues, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { createValidateInterceptor } from "@connectrpc/validate";
import { AdminService } from "../../gen/codegate/v1/admin_pb.ts";
import type { AppContext } from "../context.ts";
import type { AdminTokenVerifier } from "../admin/tokens.ts";
import type { RequestHandler as NodeHandlerFn } from "./listener.ts";
import { apiError, Reason, reasonOf } from "./errors.ts";
import { rpcMetricsInterceptor } from "./rpc-metrics.ts";

export const requestIdKey = createContextKey<string>("", { description: "request id" });
export const clientAddressKey = createContextKey<string>("", { description: "client address" });
/** X-Forwarded-For as received; believed only from a trusted proxy (see abuse/client-address.ts). */
export const forwardedForKey = createContextKey<string>("", { description: "x-forwarded-for" });
export const adminTokenIdKey = createContextKey<string>("", { description: "admin token id" });

/**
 * Logs every RPC with its outcome, and turns any error that is not one of ours
 * into a bare `internal` that carries the request id and nothing else.
 */
function outcomeInterceptor(app: AppContext): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = req.contextValues.get(requestIdKey);
    const fields = { requestId, rpc: `${req.service.name}/${req.method.name}` };
    try {
      const res = await next(req);
      app.log.info({ ...fields, grpcCode: "ok", ms: +(performance.now() - started).toFixed(2), admin: req.contextValues.get(adminTokenIdKey) || undefined }, "rpc");
      return res;
    } catch (err) {
      const ms = +(performance.now() - started).toFixed(2);
      if (err instanceof ConnectError && (err.code !== Code.Internal && err.code !== Code.Unknown)) {
        app.log.info({ ...fields, grpcCode: Code[err.code], reason: reasonOf(err), ms }, "rpc");
        throw err;
      }
      app.log.error({ ...fields, grpcCode: "Internal", ms, err }, "rpc failed");
      throw apiError(Code.Internal, Reason.internal, `internal error; quote request ${requestId} when reporting it`);
    }
  };
}

/** The values every RPC starts with; also used by the REST routes, which run the same RPCs. */
export function rpcContextValues(req: Parameters<NodeHandlerFn>[0]): ContextValues {
  const values = createContextValues();
  values.set(requestIdKey, (req.headers["x-request-id"] as string | undefined)?.slice(0, 64) || randomUUID());
  values.set(clientAddressKey, req.socket.remoteAddress ?? "");
  values.set(forwardedForKey, String(req.headers["x-forwarded-for"] ?? "").slice(0, 512));
  return values;
}

/** Every RPC ends within the configured bound, whatever the client asked for. */
function deadlineInterceptor(limitMs: number): Interceptor {
  return (next) => (req) => {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(apiError(Code.DeadlineExceeded, Reason.deadlineExceeded, `the request took longer than ${limitMs} ms`)),
        limitMs,
      );
    });
    return Promise.race([next(req), expired]).finally(() => clearTimeout(timer));
  };
}

export interface RpcOptions {
  routes: (router: ConnectRouter) => void;
  adminTokens: AdminTokenVerifier;
  fallback: NodeHandlerFn;
  shutdownSignal: AbortSignal;
}

export function createRpcHandler(app: AppContext, opts: RpcOptions): NodeHandlerFn {
  return connectNodeAdapter({
    routes: opts.routes,
    fallback: opts.fallback,
    readMaxBytes: app.config.maxRequestBytes,
    writeMaxBytes: 4 * 1024 * 1024,
    shutdownSignal: opts.shutdownSignal,
    jsonOptions: { ignoreUnknownFields: false },
    contextValues: rpcContextValues,
    // Runs before the body is read: no admin request body is parsed unauthenticated.
    async requestGate(ctx) {
      ctx.responseHeader.set("x-request-id", ctx.values.get(requestIdKey));
      if (ctx.service.typeName !== AdminService.typeName) return;
      const started = performance.now();
      const principal = await opts.adminTokens.verify(ctx.requestHeader.get("authorization"));
      if (!principal) {
        // Refused before the interceptors run, so counted here.
        app.metrics.observeRpc(ctx.service.typeName, ctx.method.name, "Unauthenticated", (performance.now() - started) / 1000);
        throw apiError(Code.Unauthenticated, Reason.unauthenticated, "a valid admin token is required: Authorization: Bearer <admin token>");
      }
      ctx.values.set(adminTokenIdKey, principal.tokenId);
    },
    interceptors: [
      rpcMetricsInterceptor(app.metrics),
      outcomeInterceptor(app),
      deadlineInterceptor(app.config.rpcTimeoutMs),
      createValidateInterceptor(),
    ],
  });
}
