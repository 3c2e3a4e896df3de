// CORS for browsers, in front of every route (Connect and REST): the origins of
// CORS_ORIGINS may call, with the header lists the Connect protocols need (from
// @connectrpc/connect) plus ours. Requests carry no cookies, so credentials are
// never allowed.
import { cors } from "@connectrpc/connect";
import type { RequestHandler } from "./listener.ts";

const allowedMethods = [...new Set([...cors.allowedMethods, "PUT", "PATCH", "DELETE"])].join(", ");
const allowedHeaders = [...cors.allowedHeaders, "Authorization", "X-Request-Id"].join(", ");
const exposedHeaders = [...cors.exposedHeaders, "X-Request-Id", "Retry-After"].join(", ");
/** Browsers cache a preflight at most this long (Chromium caps it at 2 hours). */
const MAX_AGE_SECONDS = "7200";

/** `origins`: exact origins such as https://app.example.com, or "*" for any. */
export function withCors(origins: readonly string[], next: RequestHandler): RequestHandler {
  if (origins.length === 0) return next;
  const anyOrigin = origins.includes("*");
  const allowed = new Set(origins);
  return (req, res) => {
    const origin = req.headers.origin;
    if (typeof origin !== "string") return next(req, res);
    const ok = anyOrigin || allowed.has(origin);
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"] !== undefined) {
      // A refused origin gets the same 204 without any Access-Control header:
      // the browser then refuses the request itself.
      const headers: Record<string, string> = { vary: "Origin, Access-Control-Request-Method, Access-Control-Request-Headers" };
      if (ok) {
        headers["access-control-allow-origin"] = origin;
        headers["access-control-allow-methods"] = allowedMethods;
        headers["access-control-allow-headers"] = allowedHeaders;
        headers["access-control-max-age"] = MAX_AGE_SECONDS;
      }
      res.writeHead(204, headers);
      res.end();
      return;
    }
    res.setHeader("vary", "Origin");
    if (ok) {
      res.setHeader("access-control-allow-origin", origin);
      res.setHeader("access-control-expose-headers", exposedHeaders);
    }
    next(req, res);
  };
}
