// The link mailed beside a code (settings.mail_links) and its page, `/verify`,
// in a real browser (the headless Chromium of ./support/chromium.ts), with a real
// SMTP server and PostgreSQL: the page verifies the code only when the user
// clicks, through the purpose's RPC over Connect JSON (the client package), and
// hands the proof token to the organization's return URL (a real HTTP server of
// the test) in that URL's fragment: the application's page reads it, and no
// server on the way is sent it. The same code works typed or clicked, once. A
// link cannot send the token anywhere else, and a bound code gets no link.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser, BrowserContext, Page, Request } from "playwright-core";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { Code, codegateError, IdentityState, MailKind } from "@codegate/client";
import { startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { launchChromium } from "./support/chromium.ts";
import { codeFrom, SmtpSink, type ReceivedMail } from "./support/smtp.ts";

let smtp: SmtpSink;
let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;
let browser: Browser;
let app: ReturnServer;
const contexts: BrowserContext[] = [];

/** The application's return URL: a real HTTP server that notes every request it gets. */
interface ReturnServer {
  url: string;
  requests: { url: string; headers: http.IncomingHttpHeaders }[];
  close(): Promise<void>;
}

async function returnServer(): Promise<ReturnServer> {
  const requests: ReturnServer["requests"] = [];
  const s = http.createServer((req, res) => {
    requests.push({ url: req.url ?? "", headers: req.headers });
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>The application</title><p>Welcome back</p>");
  });
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
    requests,
    close: () => new Promise((resolve) => s.close(() => resolve())),
  };
}

beforeAll(async () => {
  browser = await launchChromium();
  smtp = await SmtpSink.create();
  server = await startTestServer({ SMTP_URL: smtp.url });
  fx = adminFixtures(server.url);
  app = await returnServer();
});

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  fx?.close();
  await server?.close();
  await smtp?.stop();
  await app?.close();
});

let users = 0;
const newUser = (what: string) => `${what}-${++users}@example.com`;

/** The link of a mail, on this test server (PUBLIC_URL names no real port in tests). */
function linkOf(mail: ReceivedMail): string {
  const m = /^(http:\/\/codegate\.test\/verify#\S+)$/m.exec(mail.text);
  if (!m) throw new Error(`no link in mail "${mail.subject}"`);
  expect(mail.html).toContain(`href="${m[1].replaceAll("&", "&amp;")}"`);
  return m[1].replace("http://codegate.test", server.url);
}

async function mailTo(username: string, send: () => Promise<unknown>): Promise<ReceivedMail> {
  const before = smtp.mailsTo(username).length;
  await send();
  return smtp.nextMailTo(username, before);
}

/** A fresh page that records the requests it makes and what it complains about. */
async function openPage(url: string): Promise<{ page: Page; requests: Request[]; problems: string[] }> {
  const context = await browser.newContext({ viewport: { width: 800, height: 720 } });
  contexts.push(context);
  const page = await context.newPage();
  const requests: Request[] = [];
  const problems: string[] = [];
  page.on("request", (r) => requests.push(r));
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !msg.text().startsWith("Failed to load resource")) problems.push(`console: ${msg.text()}`);
  });
  await page.goto(url, { waitUntil: "load" });
  return { page, requests, problems };
}

const statusText = async (page: Page) => ((await page.getByRole("status").textContent()) ?? "").trim();
const fragmentOf = (url: string) => Object.fromEntries(new URLSearchParams(new URL(url).hash.slice(1)));
const VERIFY_PATHS = ["/codegate.v1.LoginService/VerifyLoginCode", "/codegate.v1.RegistrationService/CompleteRegistration", "/codegate.v1.RecoveryService/VerifyRecoveryCode"];
const verifications = (requests: Request[]) => requests.filter((r) => VERIFY_PATHS.includes(new URL(r.url()).pathname));

async function linkedOrg(name: string, extra: Record<string, unknown> = {}) {
  return fx.org(name, { mailLinks: { login: true, registration: true, recovery: true }, returnUrl: `${app.url}/back?app=1`, ...extra });
}

describe("the link beside a login code", () => {
  it("opens a page that spends nothing until the click, then verifies the code and hands the token to the return URL in its fragment", async () => {
    const org = await linkedOrg("Linked Login");
    const user = await fx.identity(org.id, newUser("link-login"));
    const mail = await mailTo(user.username, () => fx.clients.login.sendLoginCode({ username: user.username, orgId: org.id, state: "st-4f2a.9" }));
    const code = codeFrom(mail);
    const link = linkOf(mail);
    expect(fragmentOf(link)).toEqual({ purpose: "login", org: org.id, username: user.username, code, state: "st-4f2a.9" });

    const { page, requests, problems } = await openPage(link);
    expect(await page.title()).toBe("Log in");
    expect(await page.locator("#username").textContent()).toBe(user.username);
    // The code left the address bar at once, and nothing was verified by opening the link.
    expect(page.url()).toBe(`${server.url}/verify`);
    expect(verifications(requests)).toEqual([]);
    // No request of the page carries the code: it travelled in the fragment only.
    for (const r of requests) expect(r.url(), r.url()).not.toContain(code);

    const landed = page.waitForURL((u) => u.origin === app.url);
    await page.getByRole("button", { name: "Log in" }).click();
    await landed;
    const sent = verifications(requests);
    expect(sent).toHaveLength(1);
    expect(JSON.parse(sent[0].postData() ?? "{}")).toEqual({ username: user.username, orgId: org.id, code });

    // The application's page has the token in its fragment; its server got the request without it.
    const url = new URL(page.url());
    expect(url.pathname + url.search).toBe("/back?app=1");
    const handed = fragmentOf(page.url());
    expect(Object.keys(handed).sort()).toEqual(["purpose", "state", "token"]);
    expect(handed).toMatchObject({ purpose: "login", state: "st-4f2a.9" });
    expect(await page.evaluate(() => location.hash)).toContain(handed.token);
    const { payload } = await jwtVerify(handed.token, createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`)), { issuer: "http://codegate.test" });
    expect(payload).toMatchObject({ sub: user.id, org: org.id, purpose: "login" });
    const got = app.requests.filter((r) => r.url.startsWith("/back"));
    expect(got.length).toBeGreaterThan(0);
    for (const r of got) {
      expect(r.url).toBe("/back?app=1");
      expect(JSON.stringify(r.headers)).not.toContain(handed.token);
      expect(r.headers.referer).toBeUndefined();
    }
    // Clicked once: typing the same code now fails.
    const typed = await fx.clients.login.verifyLoginCode({ username: user.username, orgId: org.id, code }).catch((e: unknown) => codegateError(e));
    expect(typed).toMatchObject({ code: Code.Unauthenticated, reason: "INVALID_CODE" });
    expect(problems).toEqual([]);
  });

  it("is spent once the code was typed: the page says so and goes nowhere", async () => {
    const org = await linkedOrg("Typed First");
    const user = await fx.identity(org.id, newUser("typed-first"));
    const mail = await mailTo(user.username, () => fx.clients.login.sendLoginCode({ username: user.username, orgId: org.id }));
    expect((await fx.clients.login.verifyLoginCode({ username: user.username, orgId: org.id, code: codeFrom(mail) })).identity?.id).toBe(user.id);

    const { page, problems } = await openPage(linkOf(mail));
    await page.getByRole("button", { name: "Log in" }).click();
    await page.locator("#status[data-kind=error]").waitFor();
    expect(await statusText(page)).toMatch(/^This link did not work: its code has expired or was already used/);
    expect(page.url()).toBe(`${server.url}/verify`);
    expect(await page.getByRole("button", { name: "Log in" }).isEnabled()).toBe(true);
    expect(problems).toEqual([]);
  });

  it("hands the token to the organization's return URL only, whatever the link says", async () => {
    const org = await linkedOrg("No Detours");
    const user = await fx.identity(org.id, newUser("detour"));
    const mail = await mailTo(user.username, () => fx.clients.login.sendLoginCode({ username: user.username, orgId: org.id }));
    // Someone edits the link to name another return URL (in the fragment and in the query): the page reads neither.
    const tampered = linkOf(mail).replace("/verify#", "/verify?return_url=https%3A%2F%2Fevil.example%2F#returnUrl=https%3A%2F%2Fevil.example%2F&return_url=https%3A%2F%2Fevil.example%2F&");
    const { page, requests } = await openPage(tampered);
    const landed = page.waitForURL((u) => u.origin === app.url);
    await page.getByRole("button", { name: "Log in" }).click();
    await landed;
    expect(new URL(page.url()).pathname).toBe("/back");
    expect(requests.filter((r) => r.url().includes("evil.example") && !r.url().startsWith(server.url))).toEqual([]);
  });

  it("says done and keeps the token when the organization no longer has a return URL", async () => {
    const org = await linkedOrg("Return Removed");
    const user = await fx.identity(org.id, newUser("no-return"));
    const mail = await mailTo(user.username, () => fx.clients.login.sendLoginCode({ username: user.username, orgId: org.id }));
    await fx.clients.admin.updateOrganizationSettings({ orgId: org.id, settings: {} });
    const { page, problems } = await openPage(linkOf(mail));
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === VERIFY_PATHS[0]);
    await page.getByRole("button", { name: "Log in" }).click();
    const body = await (await answer).json();
    expect(body.returnUrl).toBeUndefined();
    await page.getByRole("heading", { name: "You are logged in" }).waitFor({ state: "visible" });
    expect(page.url()).toBe(`${server.url}/verify`);
    expect(await page.locator("body").innerText()).not.toContain(body.token);
    expect(problems).toEqual([]);
  });

  it("is not mailed for a code bound to the application's flow, nor for an organization that does not ask for links", async () => {
    const org = await linkedOrg("Bound Flows");
    const user = await fx.identity(org.id, newUser("bound"));
    const bound = await mailTo(user.username, () => fx.clients.login.sendLoginCode({ username: user.username, orgId: org.id, binding: "flow-0123456789abcdef" }));
    expect(bound.text).not.toContain("/verify");
    expect(bound.html).not.toContain("/verify");
    const plain = await fx.org("No Links", { returnUrl: `${app.url}/back` });
    const other = await fx.identity(plain.id, newUser("no-links"));
    const mail = await mailTo(other.username, () => fx.clients.login.sendLoginCode({ username: other.username, orgId: plain.id }));
    expect(mail.text).not.toContain("http");
  });
});

describe("the link beside a registration code", () => {
  it("completes the registration of an administrator's new identity and hands over a registration token", async () => {
    const org = await linkedOrg("Linked Registration");
    const username = newUser("link-reg");
    const mail = await mailTo(username, () => fx.clients.admin.createIdentity({ orgId: org.id, username, locale: "de" }));
    expect(mail.subject).toBe("Schließen Sie Ihre Registrierung bei Linked Registration ab");
    expect(mail.text).toContain("Oder öffnen Sie diesen Link, statt den Code einzugeben:");
    const { page, problems } = await openPage(linkOf(mail));
    expect(await page.title()).toBe("Complete your registration");
    const landed = page.waitForURL((u) => u.origin === app.url);
    await page.getByRole("button", { name: "Complete registration" }).click();
    await landed;
    const handed = fragmentOf(page.url());
    expect(handed.purpose).toBe("registration");
    const { payload } = await jwtVerify(handed.token, createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`)));
    expect(payload.purpose).toBe("registration");
    const identity = (await fx.clients.admin.listIdentities({ orgId: org.id })).identities.find((i) => i.username === username);
    expect(identity?.state).toBe(IdentityState.ACTIVE);
    expect(problems).toEqual([]);
  });

  it("comes in the organization's own template through {{link}}", async () => {
    const org = await linkedOrg("Own Link Template");
    await fx.clients.admin.setMailTemplate({
      orgId: org.id,
      kind: MailKind.RECOVERY,
      locale: "en",
      subject: "Recover {{org_name}}",
      text: "Code:\n    {{code}}\n{{#link}}\nhttp://codegate.test/ignored\n{{link}}\n{{/link}}",
      html: '<p>{{code}}</p>{{#link}}<a href="{{link}}">Recover</a>{{/link}}',
    });
    const user = await fx.identity(org.id, newUser("own-link"));
    const mail = await mailTo(user.username, () => fx.clients.recovery.sendRecoveryCode({ username: user.username, orgId: org.id }));
    const link = /^(http:\/\/codegate\.test\/verify#\S+)$/m.exec(mail.text)![1];
    expect(mail.html).toContain(`<a href="${link.replaceAll("&", "&amp;")}">Recover</a>`);
    const { page } = await openPage(link.replace("http://codegate.test", server.url));
    const landed = page.waitForURL((u) => u.origin === app.url);
    await page.getByRole("button", { name: "Recover account" }).click();
    await landed;
    expect(fragmentOf(page.url()).purpose).toBe("recovery");
  });
});

describe("the verify page", () => {
  it("explains a link that lacks what it needs, and offers nothing to click", async () => {
    for (const fragment of ["", "#purpose=login", `#purpose=admin&org=or-aaaaa-bbbbb-cccccccccccccccc&username=a%40b.c&code=1`, "#purpose=login&org=%3Cscript%3E&username=a&code=1"]) {
      const { page, requests, problems } = await openPage(`${server.url}/verify${fragment}`);
      await page.getByText("This link is incomplete.").waitFor();
      expect(await page.getByRole("button").isHidden(), fragment).toBe(true);
      expect(verifications(requests), fragment).toEqual([]);
      expect(problems, fragment).toEqual([]);
    }
  });

  it("is served over plain HTTP with a strict CSP, no referrer, no caching, no inline script, the same for every link", async () => {
    const res = await fetch(`${server.url}/verify`);
    expect(res.status).toBe(200);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self';");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).not.toContain("unsafe");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    const html = await res.text();
    expect(html.match(/<script\b[^>]*>/g)).toEqual(['<script type="module" src="/verify/app.js">']);
    expect(html).not.toMatch(/<style\b|\sstyle=|\son[a-z]+=/i);
    expect(await (await fetch(`${server.url}/verify?purpose=login&code=123456`)).text()).toBe(html);
    const js = await fetch(`${server.url}/verify/app.js`);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await js.text()).toContain("verifyLoginCode");
    expect((await fetch(`${server.url}/verify/app.css`)).status).toBe(200);
  });
});
