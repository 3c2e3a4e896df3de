// What operators and tools ask of the server beside the API: the gRPC health
// and reflection services on the API's port, and the operations listener
// (OPS_HOST:OPS_PORT, loopback by default) with GET /metrics and GET /readyz,
// which could tell an outsider something (a counter that rises only for a known
// username, the state of the database) and so are never served on the API port.
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { DescService } from "@bufbuild/protobuf";
import { createServiceImplSpec, type ServiceImplSpec } from "@connectrpc/connect";
import { Health } from "../../../gen/grpc/health/v1/health_pb.ts";
import { ServerReflection } from "../../../gen/grpc/reflection/v1/reflection_pb.ts";
import { ServerReflection as ServerReflectionV1alpha } from "../../../gen/grpc/reflection/v1alpha/reflection_pb.ts";
import type { Logger } from "../../lib/log.ts";
import { httpRouter, sendJson, type HttpResponse, type HttpRoute } from "../http-routes.ts";
import { healthService, HealthState, type HealthChecks, type HealthOptions } from "./health.ts";
import type { Metrics } from "./metrics.ts";
import { DescriptorIndex, reflectionService, reflectionServiceV1alpha } from "./reflection.ts";

export interface Operations {
  health: HealthState;
  /** The health and reflection services to serve beside `api`, describing all of them. */
  services(api: readonly DescService[]): ServiceImplSpec[];
  /** The routes of the operations listener. */
  httpRoutes: Record<string, HttpRoute>;
}

export function operations(checks: HealthChecks, metrics: Metrics, healthOptions?: HealthOptions): Operations {
  const health = new HealthState(checks, healthOptions);
  return {
    health,
    services(api) {
      const all = [...api, Health, ServerReflection, ServerReflectionV1alpha];
      const index = new DescriptorIndex(all);
      health.setServices(all.map((s) => s.typeName));
      return [
        createServiceImplSpec<typeof Health>(Health, healthService(health)),
        createServiceImplSpec<typeof ServerReflection>(ServerReflection, reflectionService(index)),
        createServiceImplSpec<typeof ServerReflectionV1alpha>(ServerReflectionV1alpha, reflectionServiceV1alpha(index)),
      ];
    },
    httpRoutes: {
      "GET /readyz": async (_req, res) => {
        const { ready, body } = await health.readiness();
        sendJson(res, ready ? 200 : 503, body);
      },
      "GET /metrics": metricsRoute(metrics),
    },
  };
}

/** GET /metrics of a registry, for the operations listener of a server or a courier worker. */
export function metricsRoute(metrics: Metrics): HttpRoute {
  return async (_req, res: HttpResponse) => {
    const { contentType, body } = await metrics.render();
    res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
    res.end(body);
  };
}

export interface OpsListener {
  port: number;
  url: string;
  close(): Promise<void>;
}

/** The operations listener: plain HTTP/1.1, on OPS_HOST:OPS_PORT, with its own head and request timeouts. */
export async function startOpsListener(
  routes: Record<string, HttpRoute>,
  opts: { host: string; port: number; headersTimeoutMs: number; log: Logger },
): Promise<OpsListener> {
  const router = httpRouter({ "GET /healthz": (_req, res) => sendJson(res, 200, { status: "ok" }), ...routes }, opts.log);
  const server = http.createServer({ headersTimeout: opts.headersTimeoutMs, requestTimeout: opts.headersTimeoutMs * 2, keepAliveTimeout: 5_000 }, (req, res) => {
    try {
      router(req, res);
    } catch (err) {
      opts.log.error({ err }, "operations request failed");
      res.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host === "0.0.0.0" || opts.host === "::" ? "127.0.0.1" : opts.host;
  return {
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
