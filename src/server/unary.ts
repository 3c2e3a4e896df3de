// What the unary fast paths (grpc-unary.ts, connect-unary.ts) share: the answer
// they hand the adapter, and the handler context of a call and the error it
// answers with, made as connect-es makes them for its own handlers.
import { Code, ConnectError, createHandlerContext, type MethodImplSpec } from "@connectrpc/connect";
import type { UniversalHandlerOptions, UniversalServerRequest } from "@connectrpc/connect/protocol";

/** A whole answer: head, the body (at most one message), trailers if the protocol has them. */
export interface WholeAnswer {
  status: number;
  header: Headers;
  trailer?: Headers;
  body: Uint8Array;
}

export type UnaryRequest = UniversalServerRequest & { body: AsyncIterable<Uint8Array> };

/** Serves a unary call of one protocol; undefined when the request is not the common case it serves. */
export type UnaryFastPath = (req: UnaryRequest) => Promise<WholeAnswer> | undefined;

/** The context of a call, as connect-es's handlers make it (no deadline: the adapter's call owns it). */
export function unaryContext(
  spec: MethodImplSpec,
  opt: UniversalHandlerOptions,
  req: UnaryRequest,
  protocolName: string,
  responseHeader: Record<string, string>,
  responseTrailer?: Record<string, string>,
): ReturnType<typeof createHandlerContext> {
  return createHandlerContext({
    ...spec,
    service: spec.method.parent,
    requestMethod: req.method,
    protocolName,
    shutdownSignal: opt.shutdownSignal,
    requestSignal: req.signal,
    requestHeader: req.header,
    url: req.url,
    responseHeader,
    responseTrailer,
    contextValues: req.contextValues,
  });
}

/** What a failed call answers with, as connect-es's handlers have it: a ConnectError as it is, anything else as `internal`. */
export function callError(e: unknown): ConnectError {
  return e instanceof ConnectError ? e : new ConnectError("internal error", Code.Internal, undefined, undefined, e);
}
