// Mail templates per organization and per locale, against the real server, a real
// PostgreSQL and a real SMTP server: the admin RPCs (through the client package
// over Connect, grpc-js, and their REST routes), what they refuse when a
// template is saved and what they preview; sends written in the caller's
// language (the `locale` field, Accept-Language, the organization's default,
// English) with the organization's templates; a send's one statement, the same
// for every username, with the templates taken from the cache; and a change made
// on one server heard at once by another on the same database (NOTIFY), also
// after its listening connection broke.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, codegateError, MailKind, MailTemplateSource, type CodegateClients } from "@codegate/client";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import type { Sql } from "../src/store/sql.ts";
import { notifyOrgChanged } from "../src/store/org-changes.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { failed, succeeded } from "./support/results.ts";
import { codeFrom, SmtpSink, type ReceivedMail } from "./support/smtp.ts";

let smtp: SmtpSink;
let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;
let admin: CodegateClients["admin"];
const toClose: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({ SMTP_URL: smtp.url });
  fx = adminFixtures(server.url);
  admin = fx.clients.admin;
});

afterAll(async () => {
  for (const close of toClose.reverse()) await close();
  fx?.close();
  await server?.close();
  await smtp?.stop();
});

let users = 0;
const newUser = (what: string) => `${what}-${++users}@example.com`;

async function failure(call: Promise<unknown>) {
  return codegateError(
    await call.then(
      (ok) => {
        throw new Error(`expected the call to fail, it answered ${JSON.stringify(ok, (_k, v) => (typeof v === "bigint" ? String(v) : v))}`);
      },
      (err: unknown) => err,
    ),
  );
}

const LOGIN_TEMPLATE = { subject: "Sign in to {{org_name}}", text: "Your code:\n    {{code}}\nValid for {{lifespan}}.\n", html: "<p>Your code: <b>{{code}}</b> ({{lifespan}})</p>" };

/** Sends through `send`, and answers the mail it made for `username`. */
async function mailOf(username: string, send: () => Promise<{ status?: number } | unknown>): Promise<ReceivedMail> {
  const before = smtp.mailsTo(username).length;
  const answer = await send();
  if (answer && typeof answer === "object" && "status" in answer) expect(answer.status).toBe(200);
  return smtp.nextMailTo(username, before);
}

const rest = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
  fetch(server.url + path, {
    method,
    headers: { ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then(async (res) => ({ status: res.status, body: (await res.json()) as any }));

describe("an organization's templates through the admin API", () => {
  it("are saved, listed, replaced and deleted over Connect, gRPC and the REST routes, with canonical locales", async () => {
    const org = await fx.org("Templated");
    const connect = await admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "pt-br", ...LOGIN_TEMPLATE });
    expect(connect.template).toMatchObject({ orgId: org.id, kind: MailKind.LOGIN, locale: "pt-BR", subject: LOGIN_TEMPLATE.subject });

    const grpc = grpcClient(AdminService, server.url);
    toClose.push(() => grpc.close());
    const viaGrpc = succeeded(
      await grpc.call("setMailTemplate", { orgId: org.id, kind: MailKind.REGISTRATION, locale: "de", ...LOGIN_TEMPLATE, subject: "Registrierung bei {{org_name}}" }, bearer(ADMIN_TOKEN)),
    );
    expect(viaGrpc.template?.locale).toBe("de");
    expect(failed(await grpc.call("listMailTemplates", { orgId: org.id })).code).toBe(16); // UNAUTHENTICATED without the token

    const base = `/admin/organizations/${org.id}/mail-templates`;
    const put = await rest("PUT", `${base}/MAIL_KIND_RECOVERY/fr`, { subject: "Récupération {{org_name}}", text: "{{code}}", html: "<p>{{code}}</p>" }, bearer(ADMIN_TOKEN));
    expect(put.status).toBe(200);
    expect(put.body.template).toMatchObject({ kind: "MAIL_KIND_RECOVERY", locale: "fr", subject: "Récupération {{org_name}}" });
    expect((await rest("PUT", `${base}/MAIL_KIND_RECOVERY/fr`, { subject: "x", text: "{{code}}", html: "{{code}}" })).status).toBe(401);

    // The same kind and locale again replaces it.
    await rest("PUT", `${base}/MAIL_KIND_RECOVERY/FR`, { subject: "Récupération, encore", text: "{{code}}", html: "<p>{{code}}</p>" }, bearer(ADMIN_TOKEN));
    const listed = await rest("GET", base, undefined, bearer(ADMIN_TOKEN));
    expect(listed.status).toBe(200);
    expect(listed.body.templates.map((t: any) => [t.kind, t.locale, t.subject])).toEqual([
      ["MAIL_KIND_LOGIN", "pt-BR", "Sign in to {{org_name}}"],
      ["MAIL_KIND_RECOVERY", "fr", "Récupération, encore"],
      ["MAIL_KIND_REGISTRATION", "de", "Registrierung bei {{org_name}}"],
    ]);
    expect(listed.body.builtInLocales).toEqual(["en", "de", "fr", "es"]);

    expect(await rest("DELETE", `${base}/MAIL_KIND_RECOVERY/fr`, undefined, bearer(ADMIN_TOKEN))).toEqual({ status: 200, body: { deleted: true } });
    expect(await rest("DELETE", `${base}/MAIL_KIND_RECOVERY/fr`, undefined, bearer(ADMIN_TOKEN))).toEqual({ status: 200, body: {} });
    expect((await admin.listMailTemplates({ orgId: org.id })).templates).toHaveLength(2);

    const unknown = await failure(admin.setMailTemplate({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc", kind: MailKind.LOGIN, locale: "en", ...LOGIN_TEMPLATE }));
    expect(unknown).toMatchObject({ code: Code.NotFound, reason: "NOT_FOUND" });
    expect(await failure(admin.listMailTemplates({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc" }))).toMatchObject({ code: Code.NotFound });
  });

  it("refuse, when saved, a template that reads beyond its variables, would run anything, or would not show the code, naming the part and the line", async () => {
    const org = await fx.org("Strict Templates");
    const cases: [MailKind, Partial<typeof LOGIN_TEMPLATE>, string, RegExp][] = [
      [MailKind.LOGIN, { html: "<p>{{code}}</p>\n<p>{{constructor}}</p>" }, "html", /^html: line 2: \{\{constructor\}\} is not a variable of this mail/],
      [MailKind.LOGIN, { text: "{{code}} {{code.constructor.name}}" }, "text", /is not a variable: a variable is one of/],
      [MailKind.LOGIN, { html: "{{{code}}}" }, "html", /\{\{\{code\}\}\} is not supported/],
      [MailKind.LOGIN, { html: "{{code}}{{> evil}}" }, "html", /is not supported/],
      [MailKind.LOGIN, { subject: "Your code is {{code}}" }, "subject", /must not use \{\{code\}\} or \{\{link\}\}: it is kept in plain text/],
      [MailKind.LOGIN, { text: "Log in with the link: {{link}}" }, "text", /a code's mail shows \{\{code\}\}/],
      [MailKind.UNKNOWN_RECOVERY, { subject: "Hello", text: "{{code}}", html: "<p></p>" }, "text", /\{\{code\}\} is not a variable of this mail: its variables are \{\{org_name\}\}$/],
      [MailKind.RECOVERY, { text: "{{#link}}{{code}}" }, "text", /\{\{#link\}\} is never closed/],
    ];
    for (const [kind, parts, field, message] of cases) {
      const err = await failure(admin.setMailTemplate({ orgId: org.id, kind, locale: "en", ...LOGIN_TEMPLATE, ...parts }));
      expect(err, JSON.stringify(parts)).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field });
      expect(err.message, JSON.stringify(parts)).toMatch(message);
    }
    // The proto's rules: a known kind, a language tag, one line of subject.
    for (const [req, field] of [
      [{ kind: MailKind.UNSPECIFIED, locale: "en" }, "kind"],
      [{ kind: MailKind.LOGIN, locale: "en_US" }, "locale"],
      [{ kind: MailKind.LOGIN, locale: "en", subject: "two\nlines" }, "subject"],
    ] as const) {
      expect((await failure(admin.setMailTemplate({ orgId: org.id, ...LOGIN_TEMPLATE, ...req }))).field, JSON.stringify(req)).toBe(field);
    }
    expect((await failure(admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "en-a", ...LOGIN_TEMPLATE }))).field).toBe("locale");
    expect((await admin.listMailTemplates({ orgId: org.id })).templates).toEqual([]);
  });

  it("are at most 50 per organization; one of them can still be replaced", async () => {
    const org = await fx.org("Many Templates");
    const locales = ["en", "de", "fr", "es", "it", "nl", "pt", "sv", "pl", "cs"];
    const kinds = [MailKind.LOGIN, MailKind.REGISTRATION, MailKind.RECOVERY, MailKind.ALREADY_REGISTERED, MailKind.UNKNOWN_RECOVERY];
    const source = (kind: MailKind) => (kind === MailKind.ALREADY_REGISTERED || kind === MailKind.UNKNOWN_RECOVERY ? { subject: "n", text: "n", html: "n" } : LOGIN_TEMPLATE);
    for (const locale of locales) for (const kind of kinds) await admin.setMailTemplate({ orgId: org.id, kind, locale, ...source(kind) });
    const full = await failure(admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "da", ...LOGIN_TEMPLATE }));
    expect(full).toMatchObject({ code: Code.FailedPrecondition, message: expect.stringContaining("50 templates") });
    await admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "cs", ...LOGIN_TEMPLATE, subject: "Přihlášení" });
    expect((await admin.listMailTemplates({ orgId: org.id })).templates).toHaveLength(50);
  });

  it("are previewed as a send would write them, or as a draft, with sample values, and nothing is saved or sent", async () => {
    const org = await fx.org('<b>Bold</b> & "Co"', { loginCode: { length: 8, alphabet: "ABCDEFGH" }, mailLinks: { login: true }, returnUrl: "https://app.example/back" });
    const outbox = () => server.app.orm.em.getConnection().execute<{ n: number }[]>("select count(*)::int as n from courier_message").then((r) => r[0].n);
    const sentBefore = await outbox();

    const builtin = await admin.previewMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "de-CH" });
    expect(builtin).toMatchObject({ locale: "de", source: MailTemplateSource.BUILT_IN, subject: 'Ihr Anmeldecode für <b>Bold</b> & "Co"' });
    expect(builtin.text).toMatch(/^ {4}BCDEFGHA$/m);
    expect(builtin.text).toContain("10 Minuten");
    expect(builtin.text).toContain(`http://codegate.test/verify#purpose=login&org=${org.id}&username=jdoe%40example.com&code=BCDEFGHA`);
    expect(builtin.html).toContain("&lt;b&gt;Bold&lt;/b&gt; &amp; &quot;Co&quot;");
    expect(builtin.html).not.toContain("<b>Bold</b>");

    const draft = await admin.previewMailTemplate({
      orgId: org.id,
      kind: MailKind.LOGIN,
      locale: "en",
      draft: { subject: "Hi {{org_name}}", text: "{{code}}{{#link}} or {{link}}{{/link}}", html: "<i>{{org_name}}</i> {{code}}" },
    });
    expect(draft).toMatchObject({ source: MailTemplateSource.DRAFT, locale: "en", subject: 'Hi <b>Bold</b> & "Co"', html: "<i>&lt;b&gt;Bold&lt;/b&gt; &amp; &quot;Co&quot;</i> BCDEFGHA" });
    expect(draft.text).toMatch(/^BCDEFGHA or http:\/\/codegate\.test\/verify#/);

    await admin.setMailTemplate({ orgId: org.id, kind: MailKind.ALREADY_REGISTERED, locale: "fr", subject: "Déjà chez {{org_name}}", text: "Déjà.", html: "<p>Déjà.</p>" });
    const saved = await admin.previewMailTemplate({ orgId: org.id, kind: MailKind.ALREADY_REGISTERED, locale: "fr-BE" });
    expect(saved).toMatchObject({ source: MailTemplateSource.ORGANIZATION, locale: "fr", subject: 'Déjà chez <b>Bold</b> & "Co"', text: "Déjà." });

    const bad = await failure(admin.previewMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "en", draft: { subject: "s", text: "{{code}}", html: "{{toString}}" } }));
    expect(bad).toMatchObject({ code: Code.InvalidArgument, field: "html" });
    const viaRest = await rest("POST", `/admin/organizations/${org.id}/mail-templates/MAIL_KIND_RECOVERY/es/preview`, {}, bearer(ADMIN_TOKEN));
    expect(viaRest.status).toBe(200);
    expect(viaRest.body).toMatchObject({ locale: "es", source: "MAIL_TEMPLATE_SOURCE_BUILT_IN", subject: 'Tu código de recuperación de cuenta de <b>Bold</b> & "Co"' });
    expect(viaRest.body.text).toContain("1 hora");

    expect((await admin.listMailTemplates({ orgId: org.id })).templates).toHaveLength(1);
    expect(await outbox()).toBe(sentBefore);
  });
});

describe("an organization's settings", () => {
  it("are replaced by UpdateOrganizationSettings, by the rules of creation: a safe return URL, links only with one, a language tag", async () => {
    const org = await fx.org("Settings Co");
    const updated = await admin.updateOrganizationSettings({
      orgId: org.id,
      settings: { defaultLocale: "PT-br", mailLinks: { login: true, registration: true }, returnUrl: "https://app.example/codegate?from=mail" },
    });
    expect(updated.organization?.settings).toMatchObject({ defaultLocale: "pt-BR", mailLinks: { login: true, registration: true }, returnUrl: "https://app.example/codegate?from=mail" });
    expect((await admin.getOrganization({ orgId: org.id })).organization?.settings?.defaultLocale).toBe("pt-BR");

    const refused: [Record<string, unknown>, string, RegExp][] = [
      [{ returnUrl: "javascript:alert(document.domain)" }, "settings.return_url", /an https URL/],
      [{ returnUrl: "http://app.example/back" }, "settings.return_url", /an https URL \(http only for localhost\)/],
      [{ returnUrl: "https://app.example/back#already" }, "settings.return_url", /without a fragment/],
      [{ returnUrl: "https://user:pass@app.example/back" }, "settings.return_url", /without user name or password/],
      [{ returnUrl: "/relative/path" }, "settings.return_url", /./],
      [{ returnUrl: "data:text/html,hello" }, "settings.return_url", /an https URL/],
      [{ returnUrl: "data:text/html,<script>alert(1)</script>" }, "settings.return_url", /must be a valid URI/],
      [{ returnUrl: "https://app.example/\r\nSet-Cookie: x=1" }, "settings.return_url", /must be a valid URI/],
      [{ mailLinks: { login: true } }, "settings", /mail_links need a return_url/],
      [{ defaultLocale: "english!" }, "settings.default_locale", /./],
      [{ defaultLocale: "en-a" }, "settings.default_locale", /a BCP 47 language tag/],
    ];
    for (const [settings, field, message] of refused) {
      const err = await failure(admin.updateOrganizationSettings({ orgId: org.id, settings }));
      expect(err, JSON.stringify(settings)).toMatchObject({ code: Code.InvalidArgument });
      expect(err.field ?? "", JSON.stringify(settings)).toBe(field);
      expect(err.message, JSON.stringify(settings)).toMatch(message);
      // The same rules at creation.
      expect((await failure(admin.createOrganization({ name: "Refused", settings }))).code).toBe(Code.InvalidArgument);
    }
    // A loopback return URL may be http (development).
    await admin.updateOrganizationSettings({ orgId: org.id, settings: { returnUrl: "http://localhost:3000/back" } });
    const viaRest = await rest("PUT", `/admin/organizations/${org.id}/settings`, { settings: { returnUrl: "http://127.0.0.1:3000/back", selfServiceSignup: true } }, bearer(ADMIN_TOKEN));
    expect(viaRest.status).toBe(200);
    expect(viaRest.body.organization.settings).toEqual({ selfServiceSignup: true, returnUrl: "http://127.0.0.1:3000/back" });
    expect(await failure(admin.updateOrganizationSettings({ orgId: "or-aaaaa-bbbbb-cccccccccccccccc", settings: {} }))).toMatchObject({ code: Code.NotFound });
  });
});

describe("a send", () => {
  it("is sent under the organization's sender name and address when it has them, else its name and the server's MAIL_FROM", async () => {
    const branded = await fx.org("Branded", { senderName: "Acme Support", senderAddress: "support@acme.example" });
    const plain = await fx.org("Unbranded");
    const a = await fx.identity(branded.id, newUser("branded"));
    const b = await fx.identity(plain.id, newUser("unbranded"));
    const fromBranded = await mailOf(a.username, () => fx.clients.login.sendLoginCode({ username: a.username, orgId: branded.id }));
    expect(fromBranded.raw.from?.value).toEqual([{ name: "Acme Support", address: "support@acme.example" }]);
    const fromPlain = await mailOf(b.username, () => fx.clients.login.sendLoginCode({ username: b.username, orgId: plain.id }));
    expect(fromPlain.raw.from?.value).toEqual([{ name: "Unbranded", address: server.app.config.mailFrom }]);
  });

  it("is written in the caller's locale: the locale field, else Accept-Language, else the organization's default, else English", async () => {
    const org = await fx.org("Polyglot", { defaultLocale: "es" });
    const plain = await fx.org("Plain");
    const user = await fx.identity(org.id, newUser("polyglot"));
    const other = await fx.identity(plain.id, newUser("plain"));
    await admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "de", ...LOGIN_TEMPLATE, subject: "Anmelden bei {{org_name}}" });
    const login = fx.clients.login;

    // The organization's template of the locale's language, with the lifespan in its words.
    const de = await mailOf(user.username, () => login.sendLoginCode({ username: user.username, orgId: org.id, locale: "de-AT" }));
    expect(de.subject).toBe("Anmelden bei Polyglot");
    expect(de.text).toContain("Valid for 10 Minuten.");
    // Accept-Language on a REST route, by preference: French before German.
    const fr = await mailOf(user.username, () => rest("POST", "/auth/login/code", { username: user.username, orgId: org.id }, { "accept-language": "fr-CH, de;q=0.5" }));
    expect(fr.subject).toBe("Votre code de connexion Polyglot");
    expect(fr.text).toMatch(/Il est valable 10\sminutes et ne fonctionne qu’une fois\./);
    // The field before the header.
    const field = await mailOf(user.username, () => rest("POST", "/auth/login/code", { username: user.username, orgId: org.id, locale: "de" }, { "accept-language": "fr" }));
    expect(field.subject).toBe("Anmelden bei Polyglot");
    // Neither has a template: the organization's default; without one, English.
    const ja = await mailOf(user.username, () => login.sendLoginCode({ username: user.username, orgId: org.id, locale: "ja" }));
    expect(ja.subject).toBe("Tu código de inicio de sesión de Polyglot");
    const none = await mailOf(user.username, () => rest("POST", "/auth/login/code", { username: user.username, orgId: org.id }, { "accept-language": "*, ja;q=0.9" }));
    expect(none.subject).toBe("Tu código de inicio de sesión de Polyglot");
    const en = await mailOf(other.username, () => login.sendLoginCode({ username: other.username, orgId: plain.id, locale: "ja" }));
    expect(en.subject).toBe("Your Plain login code");
    // The mailed code works whatever the language.
    expect((await login.verifyLoginCode({ username: user.username, orgId: org.id, code: codeFrom(none) })).identity?.id).toBe(user.id);

    // A locale that is no language tag is the caller's mistake.
    for (const locale of ["en-a", "en_US"]) {
      expect((await failure(login.sendLoginCode({ username: user.username, orgId: org.id, locale }))).field, locale).toBe("locale");
    }
  });

  it("of every kind takes the locale: registration (also CreateIdentity's), recovery and the notices", async () => {
    const org = await fx.org("Every Kind", { selfServiceSignup: true, notifyUnknownRecovery: true });
    const reg = newUser("kinds-reg");
    const created = await mailOf(reg, () => admin.createIdentity({ orgId: org.id, username: reg, locale: "fr" }));
    expect(created.subject).toBe("Finalisez votre inscription à Every Kind");
    const resent = await mailOf(reg, () => rest("PUT", "/auth/registration/code", { username: reg, orgId: org.id }, { "accept-language": "es" }));
    expect(resent.subject).toBe("Completa tu registro en Every Kind");
    const active = await fx.identity(org.id, newUser("kinds-active"));
    const notice = await mailOf(active.username, () => fx.clients.registration.register({ username: active.username, orgId: org.id, locale: "de" }));
    expect(notice.subject).toBe("Sie haben bereits ein Konto bei Every Kind");
    const recovery = await mailOf(active.username, () => rest("POST", "/auth/recover/user/code", { username: active.username, orgId: org.id, locale: "es-MX" }));
    expect(recovery.subject).toBe("Tu código de recuperación de cuenta de Every Kind");
    const stranger = newUser("kinds-stranger");
    const unknown = await mailOf(stranger, () => fx.clients.recovery.sendRecoveryCode({ username: stranger, orgId: org.id, locale: "fr" }));
    expect(unknown.subject).toBe("Tentative d’accès à un compte Every Kind");
  });

  it("fills the organization's template with its variables, HTML-escaped in the HTML part only", async () => {
    const name = `<img src=x onerror=alert(1)> & "Sons"`;
    const org = await fx.org(name);
    const user = await fx.identity(org.id, newUser("escaped"));
    await admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "en", subject: "{{org_name}}", text: "{{org_name}}\n    {{code}}\n", html: "<h1>{{org_name}}</h1><p>{{code}}</p>" });
    const mail = await mailOf(user.username, () => fx.clients.login.sendLoginCode({ username: user.username, orgId: org.id }));
    expect(mail.subject).toBe(name);
    expect(mail.text).toContain(name);
    expect(mail.html).toContain("<h1>&lt;img src=x onerror=alert(1)&gt; &amp; &quot;Sons&quot;</h1>");
    expect(mail.html).not.toContain("<img");
    expect(mail.html).toContain(`<p>${codeFrom(mail)}</p>`);
  });

  it("runs its one statement with the organization's templates, from the cache, the same for known and unknown usernames", async () => {
    const recorded: string[] = [];
    const recording = (sql: Sql): Sql => ({
      query: (text, params, signal) => (recorded.push(text.replace(/\s+/g, " ").trim()), sql.query(text, params, signal)),
      transaction: (work) => sql.transaction((tx) => work(recording(tx))),
    });
    const s = await startTestServer({ COURIER_ENABLED: "false" }, { instrumentSql: recording });
    toClose.push(() => s.close());
    const f = adminFixtures(s.url);
    toClose.push(() => f.close());
    const org = await f.org("One Statement", { defaultLocale: "fr" });
    await f.identity(org.id, "known@example.com");
    await f.clients.admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "de", ...LOGIN_TEMPLATE });
    // The changes above are heard back through NOTIFY too, each emptying the caches once more. A listener
    // hears notifications in commit order: once one sent after them is heard, none of theirs is still coming.
    const barrier = "or-zzzzz-zzzzz-barrier0000000000";
    const heard = new Promise<void>((resolve) => {
      const stop = s.app.orgChanges.subscribe((orgId) => orgId === barrier && (stop(), resolve()));
    });
    await notifyOrgChanged(s.app.sql, barrier);
    await heard;
    // The organization and its templates are read once, by the first send, and cached.
    recorded.length = 0;
    await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username: "warm@example.com", orgId: org.id, locale: "de" });
    expect(recorded.some((q) => q.includes("from mail_template"))).toBe(true);
    const seen: string[][] = [];
    for (const [username, locale] of [["known@example.com", "de"], ["unknown@example.com", "de"], ["known@example.com", "ja"], ["unknown@example.com", "ja"]]) {
      recorded.length = 0;
      expect((await postJson(s.url, "/codegate.v1.LoginService/SendLoginCode", { username, orgId: org.id, locale })).status).toBe(200);
      seen.push([...recorded]);
    }
    for (const statements of seen) {
      expect(statements).toHaveLength(1);
      expect(statements).toEqual(seen[0]);
    }
  });
});

describe("a change of templates or settings", () => {
  it("reaches another server on the same database at once, through NOTIFY, and is kept until the next change", async () => {
    const other = await startTestServer({ SMTP_URL: smtp.url, DATABASE_URL: server.databaseUrl });
    toClose.push(() => other.close());
    const org = await fx.org("Shared");
    const user = await fx.identity(org.id, newUser("shared"));
    const heard = () =>
      new Promise<void>((resolve) => {
        const stop = other.app.orgChanges.subscribe((id) => id === org.id && (stop(), resolve()));
      });
    const sendOnOther = (extra: Record<string, string> = {}) => mailOf(user.username, () => postJson(other.url, "/codegate.v1.LoginService/SendLoginCode", { username: user.username, orgId: org.id, ...extra }));

    // The other server reads and caches the organization and its (no) templates.
    expect((await sendOnOther()).subject).toBe("Your Shared login code");

    let change = heard();
    await admin.setMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "en", ...LOGIN_TEMPLATE });
    await change;
    expect((await sendOnOther()).subject).toBe("Sign in to Shared");

    change = heard();
    await admin.updateOrganizationSettings({ orgId: org.id, settings: { defaultLocale: "de" } });
    await change;
    expect((await sendOnOther()).subject).toBe("Ihr Anmeldecode für Shared");

    change = heard();
    await admin.deleteMailTemplate({ orgId: org.id, kind: MailKind.LOGIN, locale: "en" });
    await change;
    expect((await sendOnOther({ locale: "en" })).subject).toBe("Your Shared login code");
  });

  it("made while a server was not listening is picked up once it listens again", async () => {
    const other = await startTestServer({ SMTP_URL: smtp.url, DATABASE_URL: server.databaseUrl });
    toClose.push(() => other.close());
    const org = await fx.org("Reconnecting");
    const user = await fx.identity(org.id, newUser("reconnect"));
    const send = () => mailOf(user.username, () => postJson(other.url, "/codegate.v1.LoginService/SendLoginCode", { username: user.username, orgId: org.id }));
    expect((await send()).subject).toBe("Your Reconnecting login code");

    const db = new pg.Client({ connectionString: server.databaseUrl });
    await db.connect();
    toClose.push(() => db.end());
    // A change nobody announces (as one made while the other server's listening connection was down would be, for it).
    await db.query(`insert into mail_template (org_id, kind, locale, subject, text, html, updated_at) values ($1, 'login', 'en', 'Quietly changed', '{{code}}', '{{code}}', now())`, [org.id]);
    expect((await send()).subject).toBe("Your Reconnecting login code"); // still cached

    // Break every listening connection; each server opens its own again and forgets what it cached.
    const again = () => other.logs.filter((l) => l.includes("listening for organization changes again")).length;
    const before = again();
    const { rowCount } = await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query = 'listen codegate_org_changed'`);
    expect(rowCount).toBeGreaterThanOrEqual(2);
    await expect.poll(again, { timeout: 15_000 }).toBeGreaterThan(before);
    expect((await send()).subject).toBe("Quietly changed");
  });
});
