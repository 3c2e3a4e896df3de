// What operators and tools ask of the server beside the API: the gRPC health
// and reflection services, GET /readyz and GET /metrics (GET /healthz stays with
// the other plain routes: it needs nothing but a live process).
import type { ConnectRouter } from "@connectrpc/connect";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import { ServerReflection } from "../../gen/grpc/reflection/v1/reflection_pb.ts";
import { ServerReflection as ServerReflectionV1alpha } from "../../gen/grpc/reflection/v1alpha/reflection_pb.ts";
import type { AppContext } from "../context.ts";
import { pendingMigrations } from "../storage/orm.ts";
import { healthService, HealthState, type HealthOptions } from "./health.ts";
import { sendJson, type HttpResponse, type HttpRoute } from "./http-routes.ts";
import { DescriptorIndex, reflectionService, reflectionServiceV1alpha } from "./reflection.ts";

export interface Operations {
  health: HealthState;
  /** Wraps the API's routes: registers health and reflection beside them, describing all of them. */
  routes(api: (router: ConnectRouter) => void): (router: ConnectRouter) => void;
  httpRoutes: Record<string, HttpRoute>;
}

export function operations(ctx: AppContext, healthOptions?: HealthOptions): Operations {
  const health = new HealthState(
    {
      database: () => ctx.orm.em.getConnection().execute("select 1"),
      pendingMigrations: () => pendingMigrations(ctx.orm),
    },
    healthOptions,
  );
  return {
    health,
    routes: (api) => (router) => {
      api(router);
      const own = [Health, ServerReflection, ServerReflectionV1alpha];
      const services = [...new Set([...router.handlers.map((h) => h.service), ...own])];
      const index = new DescriptorIndex(services);
      health.setServices(services.map((s) => s.typeName));
      router.service(Health, healthService(health));
      router.service(ServerReflection, reflectionService(index));
      router.service(ServerReflectionV1alpha, reflectionServiceV1alpha(index));
    },
    httpRoutes: {
      "GET /readyz": async (_req, res) => {
        const { ready, body } = await health.readiness();
        sendJson(res, ready ? 200 : 503, body);
      },
      "GET /metrics": async (_req, res: HttpResponse) => {
        const { contentType, body } = await ctx.metrics.render();
        res.writeHead(200, { "content-type": contentType, "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
        res.end(body);
      },
    },
  };
}
