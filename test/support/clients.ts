// Clients as real callers use them: grpc-js (internal services) and HTTP/1.1
// JSON POSTs in the Connect protocol (curl), for the tests that check what
// those callers see on the wire. Everywhere else the tests call the server
// through the client package, @codegate/client (clients/ts).
import { fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape, create } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import * as grpc from "@grpc/grpc-js";

type MethodsOf<S> = S extends GenService<infer R extends GenServiceMethods> ? R : never;

export type GrpcResult<O> = { ok: true; value: O; metadata: grpc.Metadata } | { ok: false; error: grpc.ServiceError };

/** A grpc-js client for one service, serializing with the generated protobuf-es code. */
export function grpcClient<S extends GenService<any>>(service: S, address: string, credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure()) {
  const definition: Record<string, grpc.MethodDefinition<any, any>> = {};
  for (const m of service.methods) {
    definition[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.input, msg)),
      requestDeserialize: (buf: Buffer) => fromBinary(m.input, buf),
      responseSerialize: (msg: MessageShape<DescMessage>) => Buffer.from(toBinary(m.output, msg)),
      responseDeserialize: (buf: Buffer) => fromBinary(m.output, buf),
    };
  }
  const Ctor = grpc.makeGenericClientConstructor(definition, service.typeName);
  const client = new Ctor(address.replace(/^https?:\/\//, ""), credentials) as unknown as grpc.Client &
    Record<string, (req: unknown, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void>;

  return {
    client,
    /** Calls one unary method; never throws, answers the status instead. */
    call<M extends keyof MethodsOf<S> & string>(
      method: M,
      req: MessageInitShape<MethodsOf<S>[M]["input"]>,
      headers: Record<string, string> = {},
    ): Promise<GrpcResult<MessageShape<MethodsOf<S>[M]["output"]>>> {
      const desc = service.methods.find((m) => m.localName === method)!;
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) md.set(k, v);
      return new Promise((resolve) => {
        let trailers = new grpc.Metadata();
        const call = (client as any)[method](create(desc.input, req as never), md, (err: grpc.ServiceError | null, res: any) => {
          if (err) resolve({ ok: false, error: err });
          else resolve({ ok: true, value: res, metadata: trailers });
        });
        call.on("metadata", (m: grpc.Metadata) => (trailers = m));
      });
    },
    close: () => client.close(),
  };
}

export interface JsonAnswer {
  status: number;
  headers: Headers;
  body: any;
}

/** POSTs JSON to a Connect route over HTTP/1.1, as curl would. */
export async function postJson(baseUrl: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<JsonAnswer> {
  const res = await fetch(baseUrl + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed };
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
