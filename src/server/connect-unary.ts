// Connect unary calls in their common case (a POST with an uncompressed body),
// answered as connect-es's own Connect unary handler answers them and with its
// functions, minus what a call does not need here: protocol negotiation, the
// request URL parsed, the answer wrapped in an async generator only to be
// unwrapped again. Anything else (GET, a Content-Encoding, a timeout header left
// in the request because it did not parse) goes to connect-es.
import type { MethodImplSpec } from "@connectrpc/connect";
import {
  createMethodSerializationLookup,
  invokeUnaryImplementation,
  mergeNonProtocolHeaders,
  readAllBytes,
  validateUniversalHandlerOptions,
  type UniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  errorToJsonBytes,
  headerContentType,
  headerTimeout,
  headerUnaryContentLength,
  headerUnaryEncoding,
  parseContentType,
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
import { callError, unaryContext, type UnaryFastPath, type UnaryRequest, type WholeAnswer } from "./unary.ts";

export function connectUnaryHandler(spec: MethodImplSpec & { kind: "unary" }, options: Partial<UniversalHandlerOptions>): UnaryFastPath {
  const opt = validateUniversalHandlerOptions(options);
  // What connect-es would do differently (compress answers, demand the version header) stays with connect-es.
  if (opt.acceptCompression.length > 0 || opt.requireConnectProtocolHeader) return () => undefined;
  const serialization = createMethodSerializationLookup(spec.method, opt.binaryOptions, opt.jsonOptions, opt);
  return (req) => {
    if (req.method !== "POST" || req.header.has(headerTimeout) || req.header.has(headerUnaryEncoding)) return undefined;
    const type = parseContentType(req.header.get(headerContentType));
    if (!type || type.stream) return undefined;
    return answer(req, type.binary);
  };

  async function answer(req: UnaryRequest, binary: boolean): Promise<WholeAnswer> {
    const context = unaryContext(spec, opt, req, "connect", { [headerContentType]: binary ? contentTypeUnaryProto : contentTypeUnaryJson });
    let status = 200;
    let body: Uint8Array;
    try {
      if (opt.requestGate !== undefined) await opt.requestGate(context);
      const input = serialization.getI(binary).parse(await readAllBytes(req.body, opt.readMaxBytes, req.header.get(headerUnaryContentLength)));
      const output = await invokeUnaryImplementation(spec, context, input, opt.interceptors);
      body = serialization.getO(binary).serialize(output);
    } catch (e) {
      // As connect-es does: the context is aborted with the error (the pipeline's listeners may rewrite it in place), then it is sent.
      context.abort(e);
      const error = callError(e);
      status = codeToHttpStatus(error.code);
      context.responseHeader.set(headerContentType, contentTypeUnaryJson);
      if (!error.isWireError) mergeNonProtocolHeaders(context.responseHeader, error.metadata);
      body = errorToJsonBytes(error, opt.jsonOptions);
    } finally {
      context.abort();
    }
    const header = trailerMux(context.responseHeader, context.responseTrailer);
    header.set(headerUnaryContentLength, body.byteLength.toString(10));
    return { status, header, body };
  }
}
