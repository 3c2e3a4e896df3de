// What the served pages (the recovery page, the page of a mailed link) share: the
// document around their markup, their headers, and their script and style bundles
// (web/, bundled into dist/web/ by scripts/build-web.ts), read once at start. The
// HTML has no inline script or style and goes out under a strict Content-Security-Policy.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type http from "node:http";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { HttpRequest, HttpResponse, HttpRoute } from "./http-routes.ts";

/** Where scripts/build-web.ts writes the bundles. */
export const WEB_DIST = fileURLToPath(new URL("../../dist/web/", import.meta.url));

const PAGE_HEADERS: Readonly<Record<string, string>> = {
  "content-type": "text/html; charset=utf-8",
  // Scripts and styles only from this origin, calls only to it, no framing.
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  // The URL holds the flow id: never hand it to another site.
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin",
};

interface Asset {
  body: Buffer;
  /** Compressed once at start: the script is mostly protobuf descriptors, ~4x smaller gzipped. */
  gzip: Buffer;
  etag: string;
  type: string;
}

function loadAsset(dir: string, name: string, type: string): Asset {
  let body: Buffer;
  try {
    body = readFileSync(dir + name);
  } catch {
    throw new Error(
      `the pages' browser bundle ${dir}${name} is missing: run \`npm run build\` ` +
        "(npm start and npm test run it first)",
    );
  }
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  return { body, gzip: gzipSync(body, { level: 9 }), etag, type };
}

function sendAsset(req: HttpRequest, res: HttpResponse, asset: Asset): void {
  const headers = {
    "content-type": asset.type,
    etag: asset.etag,
    // Revalidated on each load (cheap: a 304), so a new build is picked up at once.
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    vary: "accept-encoding",
  };
  const r = res as http.ServerResponse;
  if (req.headers["if-none-match"] === asset.etag) {
    r.writeHead(304, headers);
    res.end();
    return;
  }
  if (/\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""))) {
    r.writeHead(200, { ...headers, "content-encoding": "gzip", "content-length": asset.gzip.length });
    res.end(asset.gzip);
    return;
  }
  r.writeHead(200, { ...headers, "content-length": asset.body.length });
  res.end(asset.body);
}

/** A page's whole document: its title, its bundle's script and style (`/<bundle>/app.js`, `.css`), and its main's markup. */
export function pageDocument(title: string, bundle: string, main: string): string {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <meta name="robots" content="noindex, nofollow">
  <title>${title}</title>
  <link rel="stylesheet" href="/${bundle}/app.css">
  <script type="module" src="/${bundle}/app.js"></script>
</head>
<body>
  <main class="card">${main}
  </main>
</body>
</html>
`;
}

export function sendPage(res: HttpResponse, status: number, html: string): void {
  (res as http.ServerResponse).writeHead(status, { ...PAGE_HEADERS, "content-length": Buffer.byteLength(html) });
  res.end(html);
}

/** The routes of a bundle's script and style; reads them once, and fails with a clear message when the build is missing. */
export function bundleRoutes(bundle: string, distDir: string = WEB_DIST): Record<string, HttpRoute> {
  const script = loadAsset(distDir, `${bundle}.js`, "text/javascript; charset=utf-8");
  const style = loadAsset(distDir, `${bundle}.css`, "text/css; charset=utf-8");
  return {
    [`GET /${bundle}/app.js`]: (req, res) => sendAsset(req, res, script),
    [`GET /${bundle}/app.css`]: (req, res) => sendAsset(req, res, style),
  };
}
