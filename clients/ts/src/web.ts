// The clients in a browser (or any runtime with fetch): Connect (JSON by
// default) or gRPC-Web, through @connectrpc/connect-web.
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { createCodegateClients, interceptorsOf, type AdminToken, type CodegateClients } from "./clients.ts";

export * from "./index.ts";

export interface WebClientOptions {
  /** Where the server is: `https://codegate.example.com`, or `location.origin`. */
  baseUrl: string;
  /** `connect` (the default) or `grpc-web`. */
  protocol?: "connect" | "grpc-web";
  /** Connect only: binary protobuf instead of JSON (JSON by default; gRPC-Web is always binary). */
  useBinaryFormat?: boolean;
  /** Sent as `Authorization: Bearer …` with AdminService calls only. Keep admin tokens out of browsers you do not control. */
  adminToken?: AdminToken;
  interceptors?: Interceptor[];
  /** A deadline for every call that sets none, in milliseconds. */
  defaultTimeoutMs?: number;
  /** Another fetch (tests, polyfills). */
  fetch?: typeof globalThis.fetch;
}

export function createWebTransport(opts: WebClientOptions): Transport {
  const common = { baseUrl: opts.baseUrl, interceptors: interceptorsOf(opts), defaultTimeoutMs: opts.defaultTimeoutMs, fetch: opts.fetch };
  return opts.protocol === "grpc-web"
    ? createGrpcWebTransport({ ...common, useBinaryFormat: true })
    : createConnectTransport({ ...common, useBinaryFormat: opts.useBinaryFormat ?? false });
}

/** The clients of every service, over fetch. */
export function createCodegateWebClients(opts: WebClientOptions): CodegateClients {
  return createCodegateClients(createWebTransport(opts));
}
