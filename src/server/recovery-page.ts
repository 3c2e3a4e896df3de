// The recovery page of an administrator's recovery link (`/recovery?flow=<id>`):
// the user types the code the administrator gave them, and the page's script
// (web/recovery/, bundled into dist/web/ by scripts/build-web.ts) verifies it
// through RecoveryService.VerifyRecoveryCode. The HTML is rendered here, with no
// inline script or style, under a strict Content-Security-Policy.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type http from "node:http";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type { Config } from "../config/config.ts";
import type { HttpRequest, HttpResponse, HttpRoute } from "./http-routes.ts";

/** Where scripts/build-web.ts writes the bundles. */
export const WEB_DIST = fileURLToPath(new URL("../../dist/web/", import.meta.url));

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const PAGE_HEADERS: Readonly<Record<string, string>> = {
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

export interface Asset {
  body: Buffer;
  /** Compressed once at start: the script is mostly protobuf descriptors, ~4x smaller gzipped. */
  gzip: Buffer;
  etag: string;
  type: string;
}

export function loadAsset(dir: string, name: string, type: string): Asset {
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

export function sendAsset(req: HttpRequest, res: HttpResponse, asset: Asset): void {
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

/** The page for a link with a flow id: the code form, empty. */
function formPage(numeric: boolean): string {
  return layout(`
    <h1 id="title">Recover your account</h1>
    <p class="lead" id="lead">Enter the recovery code your administrator gave you.</p>
    <form id="recovery-form" method="post" action="/recovery" novalidate aria-labelledby="title">
      <label for="code">Recovery code</label>
      <input id="code" name="code" type="text" value="" required maxlength="64"
        autocomplete="one-time-code" inputmode="${numeric ? "numeric" : "text"}"
        autocapitalize="off" autocorrect="off" spellcheck="false"
        aria-describedby="lead code-help status">
      <p class="help" id="code-help">Spaces do not matter. A code works once, for a limited time.</p>
      <button id="submit" type="submit" disabled>Recover account</button>
    </form>
    <section id="done" class="done" hidden aria-labelledby="done-title">
      <h2 id="done-title" tabindex="-1">Your account is recovered</h2>
      <p>You can close this page and go back to the application.</p>
    </section>
    <p id="status" class="status" role="status" aria-live="polite" aria-atomic="true"></p>
    <noscript><p class="notice">This page needs JavaScript to check your code. Turn it on and reload the page.</p></noscript>`);
}

/** The page for a link without a (well-formed) flow id: nothing to type a code for. */
function brokenLinkPage(): string {
  return layout(`
    <h1 id="title">Recover your account</h1>
    <div class="notice" role="alert">
      <p><strong>This recovery link is incomplete.</strong></p>
      <p>Open the link exactly as your administrator sent it: it ends with
        <code>/recovery?flow=</code> and a long identifier. If it still does not work,
        ask your administrator for a new recovery code and link.</p>
    </div>`);
}

function layout(main: string): string {
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="referrer" content="no-referrer">
  <meta name="robots" content="noindex, nofollow">
  <title>Recover your account</title>
  <link rel="stylesheet" href="/recovery/app.css">
  <script type="module" src="/recovery/app.js"></script>
</head>
<body>
  <main class="card">${main}
  </main>
</body>
</html>
`;
}

/**
 * The page's routes, for httpRouter. Reads the built bundle once, at start, and
 * fails with a clear message when it is missing.
 */
export function recoveryPageRoutes(config: Pick<Config, "codes">, distDir: string = WEB_DIST): Record<string, HttpRoute> {
  const script = loadAsset(distDir, "recovery.js", "text/javascript; charset=utf-8");
  const style = loadAsset(distDir, "recovery.css", "text/css; charset=utf-8");
  const numeric = /^[0-9]+$/.test(config.codes.recovery.alphabet);
  const withFlow = formPage(numeric);
  const withoutFlow = brokenLinkPage();

  return {
    "GET /recovery": (_req, res, url) => {
      const flow = url.searchParams.get("flow") ?? "";
      const ok = UUID.test(flow);
      const html = ok ? withFlow : withoutFlow;
      (res as http.ServerResponse).writeHead(ok ? 200 : 400, { ...PAGE_HEADERS, "content-length": Buffer.byteLength(html) });
      res.end(html);
    },
    "GET /recovery/app.js": (req, res) => sendAsset(req, res, script),
    "GET /recovery/app.css": (req, res) => sendAsset(req, res, style),
  };
}
