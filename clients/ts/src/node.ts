// The clients in Node.js: gRPC over HTTP/2 (the default), Connect or gRPC-Web,
// through @connectrpc/connect-node. `close()` ends the HTTP/2 connection.
import type * as http2 from "node:http2";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { createCodegateClients, interceptorsOf, type AdminToken, type CodegateClients } from "./clients.ts";

export * from "./index.ts";

export interface NodeClientOptions {
  /** Where the server is: `http://localhost:8080` (h2c) or `https://codegate.example.com`. */
  baseUrl: string;
  /** `grpc` (the default), `connect` (JSON by default) or `grpc-web`, all over HTTP/2. */
  protocol?: "grpc" | "connect" | "grpc-web";
  /** Connect only: binary protobuf instead of JSON. */
  useBinaryFormat?: boolean;
  /** Sent as `Authorization: Bearer …` with AdminService calls only. */
  adminToken?: AdminToken;
  interceptors?: Interceptor[];
  /** A deadline for every call that sets none, in milliseconds. */
  defaultTimeoutMs?: number;
  /** TLS and other options of the HTTP/2 session (`ca`, `cert`, `key`, …). */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
}

export interface NodeClients extends CodegateClients {
  transport: Transport;
  /** Closes the HTTP/2 connection; calls in flight fail. */
  close(): void;
}

/** The clients of every service over one HTTP/2 connection. */
export function createCodegateNodeClients(opts: NodeClientOptions): NodeClients {
  const sessionManager = new Http2SessionManager(opts.baseUrl, {}, opts.nodeOptions);
  const common = {
    baseUrl: opts.baseUrl,
    httpVersion: "2" as const,
    sessionManager,
    interceptors: interceptorsOf(opts),
    defaultTimeoutMs: opts.defaultTimeoutMs,
  };
  const protocol = opts.protocol ?? "grpc";
  const transport =
    protocol === "connect"
      ? createConnectTransport({ ...common, useBinaryFormat: opts.useBinaryFormat ?? false })
      : protocol === "grpc-web"
        ? createGrpcWebTransport({ ...common, useBinaryFormat: true })
        : createGrpcTransport(common);
  return { ...createCodegateClients(transport), transport, close: () => sessionManager.abort() };
}
