// Plain HTTP endpoints beside the RPCs: health for load balancers, the JWKS,
// the recovery page.
import { randomUUID } from "node:crypto";
import type http from "node:http";
import { attempt } from "../lib/abort.ts";
import type { Logger } from "../lib/log.ts";
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

const errorBody = (code: number, status: string, reason: string, message: string) => ({ error: { code, status, reason, message } });

/**
 * The URL of a request whose target is a path (origin form). Anything else
 * (`*`, an absolute URL, a path URL parsing cannot take) is undefined.
 */
export function requestUrl(req: HttpRequest): URL | undefined {
  const target = req.url ?? "";
  if (!target.startsWith("/")) return undefined;
  // Concatenated, not resolved against a base: "//host:port/…" is a path here.
  return URL.parse(`http://localhost${target}`) ?? undefined;
}

/**
 * Routes by "METHOD /path"; anything else is a JSON 404. A route that throws or rejects answers 500.
 * HEAD is answered as GET without its body (RFC 9110 §9.3.2; Node leaves the body out): load
 * balancers and link checkers ask so.
 */
export function httpRouter(routes: Record<string, HttpRoute>, log: Logger) {
  return (req: HttpRequest, res: HttpResponse) => {
    const url = requestUrl(req);
    if (!url) {
      sendJson(res, 400, errorBody(400, "Bad Request", "INVALID_ARGUMENT", "the request target must be a path"));
      return;
    }
    const route = routes[`${req.method} ${url.pathname}`] ?? (req.method === "HEAD" ? routes[`GET ${url.pathname}`] : undefined);
    if (!route) {
      sendJson(res, 404, errorBody(404, "Not Found", "NOT_FOUND", `no route for ${req.method} ${url.pathname}`.slice(0, 300)));
      return;
    }
    attempt(async () => route(req, res, url)).catch((err: unknown) => {
      const requestId = randomUUID();
      log.error({ requestId, route: `${req.method} ${url.pathname}`, err }, "route failed");
      if (res.headersSent) return res.destroy();
      const message = `internal error; quote request ${requestId} when reporting it`;
      sendJson(res, 500, { error: { ...errorBody(500, "Internal Server Error", "INTERNAL", message).error, request: requestId } }, { "x-request-id": requestId });
    });
  };
}
