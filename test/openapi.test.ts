// The OpenAPI 3.1 document of the REST routes (scripts/protoc-gen-openapi/, in
// gen/openapi/): valid, served at /openapi.json; exactly the routes the server
// answers, each answering in a documented status and shape; the admin token
// where it says so; its request schemas the rules the server applies (a body
// the document accepts, the server accepts, and one it refuses, the server
// refuses); and a REST client generated from it (openapi-typescript types,
// openapi-fetch) calling the routes.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import createClient from "openapi-fetch";
import { validate as validateOpenApi } from "@readme/openapi-parser";
import type { paths } from "../gen/openapi/codegate.openapi.ts";
import { OPENAPI_DOCUMENT } from "../src/server/openapi.ts";
import { restRoutes } from "../src/server/rest/routes.ts";
import { apiServices, type ServiceDeps } from "../src/services/index.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";

type Json = Record<string, any>;

const committed: Json = JSON.parse(readFileSync(OPENAPI_DOCUMENT, "utf8"));
const HTTP_METHODS = ["get", "put", "post", "delete", "patch"];

let server: TestServer;
let fx: ReturnType<typeof adminFixtures>;
let orgId: string;
let tenantId: string;
let identityId: string;

beforeAll(async () => {
  server = await startTestServer();
  fx = adminFixtures(server.url);
  const org = await fx.org("OpenAPI Org");
  orgId = org.id;
  tenantId = org.tenantId;
  identityId = (await fx.identity(org.id, "openapi@example.com", "active")).id;
});

afterAll(async () => {
  fx?.close();
  await server?.close();
});

/** Every operation of the document: [method, path, operation]. */
const operations = (doc: Json): [string, string, Json][] =>
  Object.entries(doc.paths as Record<string, Json>).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => HTTP_METHODS.includes(method))
      .map(([method, op]): [string, string, Json] => [method.toUpperCase(), path, op]),
  );

/** JSON Schema validation (2020-12, as OpenAPI 3.1) of the document's own schemas. */
function schemaValidator(doc: Json) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats.default(ajv);
  ajv.addSchema({ $id: "openapi", components: doc.components });
  return (schema: Json): ValidateFunction => ajv.compile(JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"openapi#/components/')));
}

async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(server.url + path, {
    method,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Json };
}

describe("the document", () => {
  it("is valid OpenAPI 3.1", async () => {
    expect(committed.openapi).toBe("3.1.0");
    const result = await validateOpenApi(structuredClone(committed) as never);
    expect(result).toMatchObject({ valid: true, warnings: [] });
  });

  it("is served at /openapi.json as committed, with this server's public URL, revalidated by ETag", async () => {
    const res = await fetch(`${server.url}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    const served = (await res.json()) as Json;
    expect(served).toEqual({ ...committed, servers: [{ url: server.app.config.publicUrl }] });
    const etag = res.headers.get("etag")!;
    expect(etag).toMatch(/^"[\w-]+"$/);
    const again = await fetch(`${server.url}/openapi.json`, { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
  });

  it("documents exactly the routes the server answers", () => {
    // The routes as the server makes them: restRoutes over the services it registers.
    const services = apiServices({} as ServiceDeps);
    const served = restRoutes(services.flatMap((s) => Object.values(s.methods).map((m) => m.method))).map((r) => `${r.verb} ${r.template}`);
    const documented = operations(committed).map(([method, path]) => `${method} ${path}`);
    expect(documented.sort()).toEqual(served.sort());
    // The documented REST API of the spec is in it.
    expect(documented).toEqual(
      expect.arrayContaining(["POST /auth/login/code", "PUT /auth/registration/code", "PUT /auth/recover/user/code", "POST /auth/recover/user/code", "POST /admin/recovery/code", "POST /iam/recovery/code", "GET /auth/code/format"]),
    );
  });
});

describe("every documented route", () => {
  it("answers (neither 404 nor 405), in a documented status, with a body of the documented schema", async () => {
    const compile = schemaValidator(committed);
    for (const [method, path, op] of operations(committed)) {
      const what = `${method} ${path}`;
      const auth: Record<string, string> = op.security ? { authorization: `Bearer ${ADMIN_TOKEN}` } : {};
      const a = await call(method, path, op.requestBody ? {} : undefined, auth);
      expect(a.status, what).not.toBe(404);
      expect(a.status, what).not.toBe(405);
      expect(Object.keys(op.responses), what).toContain(String(a.status));
      const response = op.responses[String(a.status)];
      const documented = response.$ref ? committed.components.responses[response.$ref.split("/").pop()] : response;
      const check = compile(documented.content["application/json"].schema);
      expect(check(a.body), `${what}: ${JSON.stringify(check.errors)}`).toBe(true);
      expect(a.headers.get("x-request-id"), what).toMatch(/\S/);
    }
  });

  it("needs the admin token exactly where the document says so", async () => {
    for (const [method, path, op] of operations(committed)) {
      const a = await call(method, path, op.requestBody ? {} : undefined);
      const expected = op.security ? { status: 401, reason: "UNAUTHENTICATED" } : { status: 400, reason: "INVALID_ARGUMENT" };
      expect({ status: a.status, reason: a.body.error.reason }, `${method} ${path}`).toEqual(expected);
      expect(op.security ?? [], `${method} ${path}`).toEqual(op.security ? [{ adminToken: [] }] : []);
    }
    expect(committed.components.securitySchemes.adminToken).toMatchObject({ type: "http", scheme: "bearer" });
  });
});

describe("the request schemas", () => {
  /** Bodies the server must take (true) or refuse (false); the document must say the same. */
  /** [method, path, body, accepted, the path's template when it has variables]. */
  const bodyCases = (): [string, string, Json, boolean, string?][] => {
    const user = () => `rules-${Math.random().toString(36).slice(2)}@example.com`;
    const sendCases = (method: string, path: string): [string, string, Json, boolean][] => [
      [method, path, { username: user(), orgId }, true],
      [method, path, { username: user(), tenantId }, true],
      [method, path, { username: user(), orgId, tenantId }, true],
      [method, path, { username: user(), orgId, binding: "f".repeat(16) }, true],
      [method, path, { username: user(), orgId: "or-34513-nip9c-8bppvgqgj28dbodrc" }, true],
      [method, path, { orgId }, false],
      [method, path, { username: user() }, false],
      [method, path, { username: user(), orgId: "org-123" }, false],
      [method, path, { username: user(), tenantId: orgId }, false],
      [method, path, { username: "x".repeat(255), orgId }, false],
      [method, path, { username: "a\u0001b@example.com", orgId }, false],
      [method, path, { username: user(), orgId, binding: "too-short" }, false],
      [method, path, { username: user(), orgId, colour: "red" }, false],
      [method, path, { username: 42, orgId }, false],
      [method, path, { username: user(), orgId, locale: "de-CH", state: "st.1~x_y-z" }, true],
      [method, path, { username: user(), orgId, locale: "en_US" }, false],
      [method, path, { username: user(), orgId, locale: "x".repeat(36) }, false],
      [method, path, { username: user(), orgId, state: "has space" }, false],
      [method, path, { username: user(), orgId, state: "s".repeat(257) }, false],
    ];
    const templates = "/admin/organizations/{org_id}/mail-templates/{kind}/{locale}";
    const template = { subject: "Hi {{org_name}}", text: "{{code}}", html: "<p>{{code}}</p>" };
    return [
      ...sendCases("POST", "/auth/login/code"),
      ...sendCases("PUT", "/auth/registration/code"),
      ...sendCases("PUT", "/auth/recover/user/code"),
      ["POST", "/admin/recovery/code", { identity_id: identityId }, true],
      ["POST", "/iam/recovery/code", { identity_id: identityId, expires_in: "1h30m" }, true],
      ["POST", "/admin/recovery/code", {}, false],
      ["POST", "/admin/recovery/code", { identity_id: "123" }, false],
      ["POST", "/admin/recovery/code", { identity_id: identityId, expires_in: "1 hour" }, false],
      ["POST", "/admin/recovery/code", { identity_id: identityId, expires_in: "1".repeat(64) + "s" }, false],
      ["POST", "/admin/recovery/code", { identityId }, false],
      ["PUT", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de`, template, true, templates],
      ["PUT", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de`, { ...template, subject: "" }, false, templates],
      ["PUT", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de`, { ...template, html: "x".repeat(32769) }, false, templates],
      ["PUT", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de`, { ...template, kind: "MAIL_KIND_RECOVERY" }, false, templates],
      ["POST", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de/preview`, {}, true, `${templates}/preview`],
      ["POST", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de/preview`, { draft: template }, true, `${templates}/preview`],
      ["POST", `/admin/organizations/${orgId}/mail-templates/MAIL_KIND_LOGIN/de/preview`, { draft: { ...template, text: "" } }, false, `${templates}/preview`],
      ["PUT", `/admin/organizations/${orgId}/settings`, { settings: { defaultLocale: "de", returnUrl: "https://app.example/back" } }, true, "/admin/organizations/{org_id}/settings"],
      ["PUT", `/admin/organizations/${orgId}/settings`, { settings: { returnUrl: "not a uri" } }, false, "/admin/organizations/{org_id}/settings"],
      ["PUT", `/admin/organizations/${orgId}/settings`, { settings: { defaultLocale: "english!" } }, false, "/admin/organizations/{org_id}/settings"],
      ["PUT", `/admin/organizations/${orgId}/settings`, { settings: {} }, true, "/admin/organizations/{org_id}/settings"],
      ["PUT", `/admin/identities/${identityId}/phone-number`, { phoneNumber: "+41446681800" }, true, "/admin/identities/{identity_id}/phone-number"],
      ["PUT", `/admin/identities/${identityId}/phone-number`, {}, true, "/admin/identities/{identity_id}/phone-number"],
      ["PUT", `/admin/identities/${identityId}/phone-number`, { phoneNumber: "0041446681800" }, false, "/admin/identities/{identity_id}/phone-number"],
      ["PUT", `/admin/identities/${identityId}/phone-number`, { phoneNumber: "+41 44 668 18 00" }, false, "/admin/identities/{identity_id}/phone-number"],
      ["PUT", `/admin/identities/${identityId}/phone-number`, { phoneNumber: 41446681800 }, false, "/admin/identities/{identity_id}/phone-number"],
    ];
  };

  it("accept what the server accepts and refuse what it refuses, for every body route", async () => {
    const compile = schemaValidator(committed);
    for (const [method, path, body, accepted, template] of bodyCases()) {
      const op = committed.paths[template ?? path][method.toLowerCase()];
      const check = compile(op.requestBody.content["application/json"].schema);
      const what = `${method} ${path} ${JSON.stringify(body)}`;
      expect(check(body), `${what}: the document says ${JSON.stringify(check.errors)}`).toBe(accepted);
      const a = await call(method, path, body, op.security ? { authorization: `Bearer ${ADMIN_TOKEN}` } : {});
      expect(a.status >= 200 && a.status < 300, `${what}: the server answered ${a.status} ${JSON.stringify(a.body)}`).toBe(accepted);
      expect(a.status, what).toBe(accepted ? Number(Object.keys(op.responses)[0]) : 400);
    }
  });

  it("accept the query parameters the server accepts and refuse the ones it refuses", async () => {
    const compile = schemaValidator(committed);
    const op = committed.paths["/auth/code/format"].get;
    const query = {
      type: "object",
      additionalProperties: false,
      properties: Object.fromEntries(op.parameters.map((p: Json) => [p.name, p.schema])),
      required: op.parameters.filter((p: Json) => p.required).map((p: Json) => p.name),
    };
    const check = compile(query);
    const cases: [Record<string, string>, boolean][] = [
      [{ orgId, purpose: "CODE_PURPOSE_LOGIN" }, true],
      [{ tenantId, purpose: "CODE_PURPOSE_RECOVERY" }, true],
      [{ orgId }, false],
      [{ orgId, purpose: "CODE_PURPOSE_BOGUS" }, false],
      [{ orgId: "org-123", purpose: "CODE_PURPOSE_LOGIN" }, false],
      [{ orgId, purpose: "CODE_PURPOSE_LOGIN", username: "jdoe@example.com" }, false],
    ];
    for (const [params, accepted] of cases) {
      const what = new URLSearchParams(params).toString();
      expect(check(params), `${what}: the document says ${JSON.stringify(check.errors)}`).toBe(accepted);
      expect((await call("GET", `/auth/code/format?${what}`)).status, what).toBe(accepted ? 200 : 400);
    }
  });
});

describe("a REST client generated from the document (openapi-typescript, openapi-fetch)", () => {
  it("calls the seed routes, typed, and reads the documented error body", async () => {
    const rest = createClient<paths>({ baseUrl: server.url });

    const sent = await rest.POST("/auth/login/code", { body: { username: "openapi@example.com", orgId } });
    expect(sent.response.status).toBe(200);
    expect(sent.data).toEqual({ message: "success" });

    const format = await rest.GET("/auth/code/format", { params: { query: { tenantId, purpose: "CODE_PURPOSE_LOGIN" } } });
    expect(format.data).toEqual({ purpose: "CODE_PURPOSE_LOGIN", length: 6, alphabet: "0123456789", lifespan: "600s" });

    const created = await rest.POST("/admin/recovery/code", { body: { identity_id: identityId, expires_in: "15m" }, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(created.response.status).toBe(201);
    expect(created.data?.recovery_code).toMatch(/^\d{6}$/);
    expect(created.data?.recovery_link).toMatch(/\/recovery\?flow=[0-9a-f-]{36}$/);

    // A seed script setting up an organization's mails.
    const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const settings = await rest.PUT("/admin/organizations/{org_id}/settings", {
      params: { path: { org_id: orgId } },
      body: { settings: { defaultLocale: "fr", mailLinks: { login: true }, returnUrl: "https://app.example/back" } },
      headers: auth,
    });
    expect(settings.data?.organization?.settings?.defaultLocale).toBe("fr");
    const saved = await rest.PUT("/admin/organizations/{org_id}/mail-templates/{kind}/{locale}", {
      params: { path: { org_id: orgId, kind: "MAIL_KIND_LOGIN", locale: "fr" } },
      body: { subject: "Connexion à {{org_name}}", text: "{{code}}{{#link}} {{link}}{{/link}}", html: "<p>{{code}}</p>" },
      headers: auth,
    });
    expect(saved.data?.template).toMatchObject({ kind: "MAIL_KIND_LOGIN", locale: "fr" });
    const preview = await rest.POST("/admin/organizations/{org_id}/mail-templates/{kind}/{locale}/preview", {
      params: { path: { org_id: orgId, kind: "MAIL_KIND_LOGIN", locale: "fr-CA" } },
      body: {},
      headers: auth,
    });
    expect(preview.data).toMatchObject({ subject: "Connexion à OpenAPI Org", locale: "fr", source: "MAIL_TEMPLATE_SOURCE_ORGANIZATION" });
    expect(preview.data?.text).toMatch(/^123456 http:\/\/codegate\.test\/verify#/);
    await rest.PUT("/admin/organizations/{org_id}/settings", { params: { path: { org_id: orgId } }, body: { settings: {} }, headers: auth });

    const refused = await rest.PUT("/auth/recover/user/code", { body: { username: "openapi@example.com", orgId: "org-123" } });
    expect(refused.response.status).toBe(400);
    expect(refused.error?.error).toMatchObject({ code: 400, status: "Bad Request", reason: "INVALID_ARGUMENT", message: expect.stringContaining("org_id") });
  });
});
