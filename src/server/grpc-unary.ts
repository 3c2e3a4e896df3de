// gRPC unary calls without connect-es's stream machinery. connect-es serves
// every gRPC call, a unary one too, as a pipe of async generators (split the
// envelopes, parse them, invoke, serialize, join, catch), which here cost about
// 140 µs of CPU per call: a gRPC send took 1.3 to 1.6 times the CPU of the
// same send over Connect. This serves the common case, one uncompressed
// message, the way connect-es serves a Connect unary call: the same request
// gate, interceptors, serialization, limits and trailers (connect-es's own
// functions), read in one go. Anything else (a compressed request, a timeout
// header left in the request because it did not parse) goes to connect-es.
import { Code, ConnectError, type MethodImplSpec } from "@connectrpc/connect";
import {
  compressedFlag,
  createMethodSerializationLookup,
  encodeEnvelope,
  invokeUnaryImplementation,
  validateUniversalHandlerOptions,
  type UniversalHandlerOptions,
} from "@connectrpc/connect/protocol";
import {
  contentTypeJson,
  contentTypeProto,
  grpcStatusOk,
  headerContentType,
  headerEncoding,
  headerGrpcStatus,
  headerTimeout,
  parseContentType,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import { callError, unaryContext, type UnaryFastPath, type UnaryRequest, type WholeAnswer } from "./unary.ts";

export function grpcUnaryHandler(spec: MethodImplSpec & { kind: "unary" }, options: Partial<UniversalHandlerOptions>): UnaryFastPath {
  const opt = validateUniversalHandlerOptions(options);
  // connect-es would compress answers for clients that accept it: that stays with connect-es.
  if (opt.acceptCompression.length > 0) return () => undefined;
  const serialization = createMethodSerializationLookup(spec.method, opt.binaryOptions, opt.jsonOptions, opt);
  return (req) => {
    if (req.method !== "POST" || req.header.has(headerTimeout)) return undefined;
    const encoding = req.header.get(headerEncoding);
    if (encoding !== null && encoding !== "identity") return undefined;
    const type = parseContentType(req.header.get(headerContentType));
    if (!type) return undefined;
    return answer(req, type.binary);
  };

  async function answer(req: UnaryRequest, binary: boolean): Promise<WholeAnswer> {
    const context = unaryContext(spec, opt, req, "grpc", { [headerContentType]: binary ? contentTypeProto : contentTypeJson }, { [headerGrpcStatus]: grpcStatusOk });
    let body = new Uint8Array(0);
    try {
      if (opt.requestGate !== undefined) await opt.requestGate(context);
      const parser = serialization.getI(binary);
      const input = await readOneMessage(req.body, opt.readMaxBytes, (data) => parser.parse(data));
      const output = await invokeUnaryImplementation(spec, context, input, opt.interceptors);
      body = encodeEnvelope(0, serialization.getO(binary).serialize(output));
    } catch (e) {
      // As connect-es does: the context is aborted with the error (the pipeline's listeners may rewrite it in place), then it is sent.
      context.abort(e);
      setTrailerStatus(context.responseTrailer, callError(e));
    } finally {
      context.abort();
    }
    return { status: 200, header: context.responseHeader, trailer: context.responseTrailer, body };
  }
}

/**
 * The one message of a unary request, read as connect-es reads it, with its
 * errors: an envelope declaring more than `readMaxBytes` (refused at its head),
 * a compressed one, a second one (refused once it is whole), none, or one cut
 * short when the body ends. The first is parsed as soon as it is whole.
 */
async function readOneMessage<T>(body: AsyncIterable<Uint8Array>, readMaxBytes: number, parse: (data: Uint8Array) => T): Promise<T> {
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let length = -1;
  let flags = 0;
  let input: { message: T } | undefined;
  // The first `n` bytes pending, joined (once per envelope head and body: never a copy per chunk).
  const take = (n: number): Uint8Array => {
    const joined = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
    pending = joined.byteLength > n ? [joined.subarray(n)] : [];
    pendingBytes -= n;
    return joined.subarray(0, n);
  };
  for await (const chunk of body) {
    pending.push(chunk);
    pendingBytes += chunk.byteLength;
    for (;;) {
      if (length < 0) {
        if (pendingBytes < 5) break;
        const head = take(5);
        flags = head[0]!;
        length = new DataView(head.buffer, head.byteOffset, 5).getUint32(1);
        if (length > readMaxBytes) throw new ConnectError(`message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted);
      }
      if (pendingBytes < length) break;
      const data = take(length);
      length = -1;
      if ((flags & compressedFlag) === compressedFlag) throw new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal);
      if (input) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
      input = { message: parse(data) };
    }
  }
  if (pendingBytes > 0 || length >= 0) throw new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument);
  if (!input) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
  return input.message;
}
