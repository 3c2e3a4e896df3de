// Plain HTTP endpoints beside the RPCs: health for load balancers, and whatever
// later issues add (JWKS, the recovery page, REST routes).
import type http from "node:http";
import type { RequestHandler } from "./listener.ts";

export type HttpRequest = Parameters<RequestHandler>[0];
export type HttpResponse = Parameters<RequestHandler>[1];
export type HttpRoute = (req: HttpRequest, res: HttpResponse, url: URL) => void | Promise<void>;

export function sendJson(res: HttpResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  (res as http.ServerResponse).writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(payload),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(payload);
}

/** Routes by "METHOD /path"; anything else is a JSON 404. */
export function httpRouter(routes: Record<string, HttpRoute>) {
  return (req: HttpRequest, res: HttpResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const route = routes[`${req.method} ${url.pathname}`];
    if (!route) {
      sendJson(res, 404, { error: { code: 404, status: "Not Found", reason: "NOT_FOUND", message: `no route for ${req.method} ${url.pathname}` } });
      return;
    }
    Promise.resolve(route(req, res, url)).catch(() => {
      if (!res.headersSent) sendJson(res, 500, { error: { code: 500, status: "Internal Server Error", reason: "INTERNAL", message: "internal error" } });
      else res.end();
    });
  };
}
