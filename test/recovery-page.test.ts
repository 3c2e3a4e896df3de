// The recovery page of an administrator's recovery link, in a real browser: the
// headless Chromium of the npm package @sparticuz/chromium (or CHROMIUM_PATH), driven
// by playwright-core; see ./support/chromium.ts. The page's script is the esbuild
// bundle of web/recovery/, built by `pretest`, calling
// RecoveryService.VerifyRecoveryCode through the client package (clients/ts, over
// @connectrpc/connect-web), and, for an organization with a return URL, handing
// the proof token to it (a real HTTP server of the test) in its fragment.
import { mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { recoveryPageRoutes } from "../src/server/recovery-page.ts";
import { startTestServer, type TestServer } from "./support/server.ts";
import { postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { launchChromium } from "./support/chromium.ts";

/** Set to a directory to keep screenshots of the page (not committed). */
const SHOTS = process.env.RECOVERY_PAGE_SCREENSHOTS;
const VERIFY_PATH = "/codegate.v1.RecoveryService/VerifyRecoveryCode";

let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;
let browser: Browser;
let orgId: string;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  // First: the first run decompresses the bundled browser, with TMPDIR pointed elsewhere meanwhile.
  browser = await launchChromium();
  server = await startTestServer();
  fx = adminFixtures(server.url);
  orgId = (await fx.org("Acme Recovery Page")).id;
});

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  fx?.close();
  await server?.close();
});

/** An admin-issued recovery code for a new active identity, and its link on this test server. */
async function adminRecoveryCode(username: string) {
  const identity = await fx.identity(orgId, username, "active");
  const r = await fx.clients.admin.createRecoveryCode({ identityId: identity.id, expiresIn: "15m" });
  const link = new URL(r.recoveryLink);
  expect(link.pathname).toBe("/recovery");
  const flowId = link.searchParams.get("flow")!;
  // PUBLIC_URL names no real port in tests: the same path and query on the server.
  return { identity, code: r.recoveryCode, flowId, url: `${server.url}${link.pathname}${link.search}` };
}

/** A fresh page that records what the page itself complains about. */
async function openPage(url: string): Promise<{ page: Page; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 800, height: 720 } });
  contexts.push(context);
  const page = await context.newPage();
  const problems: string[] = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  // Chromium logs every 4xx as "Failed to load resource"; answers are checked by status instead.
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) problems.push(`console: ${msg.text()}`);
  });
  page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`));
  page.on("response", (res) => {
    const path = new URL(res.url()).pathname;
    if (res.status() >= 400 && path !== "/recovery" && path !== VERIFY_PATH && path !== "/favicon.ico") {
      problems.push(`${res.status()} for ${path}`);
    }
  });
  const res = await page.goto(url, { waitUntil: "load" });
  expect(res).not.toBeNull();
  return { page, problems };
}

async function screenshot(page: Page, name: string) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

const wrongCodeFor = (code: string) => code.slice(0, -1) + (code.endsWith("0") ? "1" : "0");
const statusText = async (page: Page) => ((await page.getByRole("status").textContent()) ?? "").trim();

describe("the recovery page in Chromium", () => {
  it("takes the admin-issued code in an empty field and recovers the account through VerifyRecoveryCode", async () => {
    const { identity, code, flowId, url } = await adminRecoveryCode("page-ok@example.com");
    const { page, problems } = await openPage(url);

    expect(await page.title()).toBe("Recover your account");
    const field = page.getByLabel("Recovery code");
    expect(await field.inputValue()).toBe("");
    expect(await field.getAttribute("autocomplete")).toBe("one-time-code");
    expect(await field.getAttribute("inputmode")).toBe("numeric");
    await screenshot(page, "1-empty");

    await field.fill(code);
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === VERIFY_PATH);
    await page.getByRole("button", { name: "Recover account" }).click();
    const response = await answer;

    // The browser spoke Connect JSON to this origin, with the link's flow id and the typed code.
    expect(response.status()).toBe(200);
    expect(response.request().headers()["content-type"]).toBe("application/json");
    expect(JSON.parse(response.request().postData() ?? "{}")).toEqual({ flowId, code });
    const body = await response.json();
    expect(body.identity.id).toBe(identity.id);
    expect(body.token.split(".")).toHaveLength(3);

    const done = page.getByRole("heading", { name: "Your account is recovered" });
    await done.waitFor({ state: "visible" });
    expect(await statusText(page)).toBe("Your account is recovered.");
    expect(await page.locator("#recovery-form").isHidden()).toBe(true);
    expect(await done.evaluate((el) => el === document.activeElement)).toBe(true);
    // The token is not shown to the user, and is not in the URL.
    expect(await page.locator("body").innerText()).not.toContain(body.token);
    expect(page.url()).toBe(url);
    await screenshot(page, "2-recovered");

    // The code is spent.
    const again = await postJson(server.url, VERIFY_PATH, { flowId, code });
    expect(again.status).toBe(401);
    expect(problems).toEqual([]);
  });

  it("says what went wrong for an empty or a wrong code, and stays usable", async () => {
    const { code, url } = await adminRecoveryCode("page-wrong@example.com");
    const { page, problems } = await openPage(url);
    const field = page.getByLabel("Recovery code");
    const submit = page.getByRole("button", { name: "Recover account" });

    await submit.click();
    await page.locator("#status[data-kind=error]").waitFor();
    expect(await statusText(page)).toBe("Enter the recovery code your administrator gave you.");
    expect(await field.getAttribute("aria-invalid")).toBe("true");

    await field.fill(wrongCodeFor(code));
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === VERIFY_PATH);
    await submit.click();
    expect((await answer).status()).toBe(401);
    await page.getByText("ask your administrator for a new recovery code").waitFor();
    expect(await statusText(page)).toMatch(/^That code did not work: it is wrong, expired or already used\./);
    expect(await field.getAttribute("aria-invalid")).toBe("true");
    expect(await field.evaluate((el) => el === document.activeElement)).toBe(true);
    expect(await submit.isEnabled()).toBe(true);
    await screenshot(page, "3-wrong-code");

    // Still usable: typing clears the error, and the right code (one wrong guess
    // is below the attempt limit) recovers the account.
    await field.fill(` ${code.slice(0, 3)} ${code.slice(3)} `);
    expect(await field.getAttribute("aria-invalid")).toBeNull();
    await submit.click();
    await page.getByRole("heading", { name: "Your account is recovered" }).waitFor({ state: "visible" });
    expect(problems).toEqual([]);
  });

  it("hands the proof token to the organization's return URL, in its fragment, and to no URL the link names", async () => {
    const seen: { url: string; headers: http.IncomingHttpHeaders }[] = [];
    const app = http.createServer((req, res) => {
      seen.push({ url: req.url ?? "", headers: req.headers });
      res.writeHead(200, { "content-type": "text/html" });
      res.end("<!doctype html><title>App</title>");
    });
    await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve));
    try {
      const appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
      const org = await fx.org("Recovery Hand-off", { returnUrl: `${appUrl}/recovered?step=2` });
      const identity = await fx.identity(org.id, "page-handoff@example.com", "active");
      const r = await fx.clients.admin.createRecoveryCode({ identityId: identity.id, expiresIn: "15m" });
      const link = new URL(r.recoveryLink);
      // Someone adds a return URL of their own to the link: the page does not read it.
      const { page, problems } = await openPage(`${server.url}${link.pathname}${link.search}&return_url=https%3A%2F%2Fevil.example%2F#return_url=https://evil.example/`);
      await page.getByLabel("Recovery code").fill(r.recoveryCode);
      const landed = page.waitForURL((u) => u.origin === appUrl);
      await page.getByRole("button", { name: "Recover account" }).click();
      await landed;

      const url = new URL(page.url());
      expect(url.pathname + url.search).toBe("/recovered?step=2");
      const handed = Object.fromEntries(new URLSearchParams(url.hash.slice(1)));
      expect(Object.keys(handed).sort()).toEqual(["purpose", "token"]);
      expect(handed.purpose).toBe("recovery");
      const { payload } = await jwtVerify(handed.token, createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`)));
      expect(payload).toMatchObject({ sub: identity.id, org: org.id, purpose: "recovery" });
      // The application's server never got the token: it stays in the fragment.
      expect(seen.filter((s) => s.url.startsWith("/recovered")).length).toBeGreaterThan(0);
      for (const s of seen) expect(JSON.stringify(s)).not.toContain(handed.token);
      expect(problems).toEqual([]);
    } finally {
      await new Promise((resolve) => app.close(resolve));
    }
  });

  it("explains a link without a flow instead of showing a form that cannot work", async () => {
    const { page, problems } = await openPage(`${server.url}/recovery`);
    await page.getByText("This recovery link is incomplete.").waitFor();
    expect(await page.getByRole("alert").innerText()).toContain("ask your administrator for a new recovery code");
    expect(await page.getByLabel("Recovery code").count()).toBe(0);
    await screenshot(page, "4-no-flow");
    expect(problems).toEqual([]);
  });
});

describe("the recovery page over plain HTTP", () => {
  const flow = "0b8f6a52-3c1e-4f7e-9d55-6a1c2b3d4e5f";

  it("is served with a strict CSP, nosniff, no referrer, no caching, and no inline script", async () => {
    const res = await fetch(`${server.url}/recovery?flow=${flow}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self';");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain("unsafe");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(res.headers.get("cache-control")).toBe("no-store");

    const html = await res.text();
    const scripts = html.match(/<script\b[^>]*>/g) ?? [];
    expect(scripts).toEqual(['<script type="module" src="/recovery/app.js">']);
    expect(html).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=/i);
    expect(html).toMatch(/<label for="code">Recovery code<\/label>/);
    expect(html).toContain('value=""');
    expect(html).toMatch(/role="status" aria-live="polite"/);
    // The flow id is read by the script from the URL, never written into the page.
    expect(html).not.toContain(flow);
  });

  it("answers 400 with the explanation for a missing or malformed flow", async () => {
    for (const path of ["/recovery", "/recovery?flow=", "/recovery?flow=not-a-uuid", "/recovery?flow=%3Cscript%3E"]) {
      const res = await fetch(server.url + path);
      expect(res.status, path).toBe(400);
      expect(res.headers.get("content-security-policy"), path).toContain("script-src 'self'");
      const html = await res.text();
      expect(html, path).toContain("This recovery link is incomplete.");
      expect(html, path).not.toContain("<form");
      expect(html, path).not.toContain("<script>");
    }
  });

  it("serves the built bundle and its stylesheet, revalidated by ETag, gzipped when asked", async () => {
    const js = await fetch(`${server.url}/recovery/app.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("x-content-type-options")).toBe("nosniff");
    expect(js.headers.get("cache-control")).toBe("no-cache");
    expect(js.headers.get("content-encoding")).toBe("gzip"); // fetch asks for it, and decodes
    const source = await js.text();
    expect(source).toContain("verifyRecoveryCode");
    expect(source).toContain("useBinaryFormat:!1");
    expect(source).not.toMatch(/^import\s/m); // bundled: no bare imports left for the browser

    const etag = js.headers.get("etag")!;
    const cached = await fetch(`${server.url}/recovery/app.js`, { headers: { "if-none-match": etag } });
    expect(cached.status).toBe(304);

    const css = await fetch(`${server.url}/recovery/app.css`);
    expect(css.status).toBe(200);
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect(await css.text()).toContain(":focus-visible");
  });

  it("refuses to start without the bundle, saying how to build it", () => {
    expect(() => recoveryPageRoutes(server.app.config, "/nonexistent/dist/web/")).toThrow(/recovery\.js is missing: run `npm run build`/);
  });
});
