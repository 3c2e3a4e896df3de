// What the unary fast paths (grpc-unary.ts, connect-unary.ts) share: the answer
// they hand the adapter, and the handler context of a call, made as connect-es
// makes it for its own handlers.
import { createHandlerContext, type MethodImplSpec } from "@connectrpc/connect";
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
