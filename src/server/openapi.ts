// GET /openapi.json: the OpenAPI 3.1 document of the REST routes, generated from
// the protos by scripts/protoc-gen-openapi/ into gen/openapi/ (committed, kept up
// to date by `npm run check:gen`), with this server's public URL as its server.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type http from "node:http";
import type { HttpRoute } from "./http-routes.ts";

export const OPENAPI_DOCUMENT = new URL("../../gen/openapi/codegate.openapi.json", import.meta.url);

export function openApiRoutes(publicUrl: string): Record<string, HttpRoute> {
  const { openapi, info, ...rest } = JSON.parse(readFileSync(OPENAPI_DOCUMENT, "utf8")) as Record<string, unknown>;
  const body = Buffer.from(JSON.stringify({ openapi, info, servers: [{ url: publicUrl }], ...rest }));
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  return {
    "GET /openapi.json": (req, res) => {
      const headers = { etag, "cache-control": "no-cache" };
      if (req.headers["if-none-match"] === etag) {
        (res as http.ServerResponse).writeHead(304, headers);
        res.end();
        return;
      }
      (res as http.ServerResponse).writeHead(200, { ...headers, "content-type": "application/json", "content-length": body.byteLength });
      res.end(body);
    },
  };
}
