import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import { IdentityState } from "../gen/codegate/v1/types_pb.ts";
import { createAdminToken, revokeAdminToken } from "../src/rules/admin-tokens.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { failed, succeeded } from "./support/results.ts";

const ORG_RE = /^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{16}$/;
const TENANT_RE = /^acct-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{16}$/;

let server: TestServer;
let admin: ReturnType<typeof grpcClient<typeof AdminService>>;
const auth = bearer(ADMIN_TOKEN);
const rpc = (method: string) => `/codegate.v1.AdminService/${method}`;

beforeAll(async () => {
  server = await startTestServer();
  admin = grpcClient(AdminService, server.url);
});
afterAll(async () => {
  admin?.close();
  await server?.close();
});

describe("admin authentication", () => {
  it("refuses a call without a token, over gRPC and JSON, with the same answer", async () => {
    const g = await admin.call("listOrganizations", {});
    expect(failed(g).code).toBe(status.UNAUTHENTICATED);
    const j = await postJson(server.url, rpc("ListOrganizations"), {});
    expect(j.status).toBe(401);
    expect(j.body.code).toBe("unauthenticated");
  });

  it("answers a wrong token exactly like a missing one", async () => {
    const missing = await postJson(server.url, rpc("ListOrganizations"), {});
    const wrong = await postJson(server.url, rpc("ListOrganizations"), {}, bearer("cga_aaaaaaaaaaaa_" + "x".repeat(43)));
    const garbage = await postJson(server.url, rpc("ListOrganizations"), {}, bearer("nope"));
    for (const a of [wrong, garbage]) {
      expect(a.status).toBe(missing.status);
      expect(a.body.code).toBe(missing.body.code);
      expect(a.body.message).toBe(missing.body.message);
    }
  });

  it("accepts stored tokens until they are revoked", async () => {
    const { id, token } = await createAdminToken(server.app.orm, "test", new Date());
    expect((await admin.call("listOrganizations", {}, bearer(token))).ok).toBe(true);
    // The row keeps only a hash of the secret.
    const rows = await server.app.orm.em.getConnection().execute("select secret_hash from admin_token where id = ?", [id]);
    const secret = token.slice("cga_".length + 12 + 1);
    expect(Buffer.from(rows[0].secret_hash).equals(createHash("sha256").update(secret).digest())).toBe(true);
    expect(await revokeAdminToken(server.app.orm, id, new Date())).toBe(true);
    const after = await admin.call("listOrganizations", {}, bearer(token));
    expect(failed(after).code).toBe(status.UNAUTHENTICATED);
  });
});

describe("organizations", () => {
  it("creates, gets and lists them through grpc-js", async () => {
    const org = succeeded(await admin.call("createOrganization", { name: "Acme", settings: { selfServiceSignup: true } }, auth)).organization!;
    expect(org.id).toMatch(ORG_RE);
    expect(org.tenantId).toMatch(TENANT_RE);
    expect(org.name).toBe("Acme");
    expect(org.settings?.selfServiceSignup).toBe(true);

    const got = await admin.call("getOrganization", { orgId: org.id }, auth);
    expect(got.ok && got.value.organization?.name).toBe("Acme");
  });

  it("creates and gets them through HTTP/1.1 JSON, keeping a given tenant", async () => {
    const tenantId = "acct-abcde-fghij-klmnopqrstuvwxyz";
    const created = await postJson(server.url, rpc("CreateOrganization"), { name: "Json Org", tenantId }, auth);
    expect(created.status).toBe(200);
    expect(created.body.organization.tenantId).toBe(tenantId);
    expect(created.body.organization.id).toMatch(ORG_RE);
    const got = await postJson(server.url, rpc("GetOrganization"), { orgId: created.body.organization.id }, auth);
    expect(got.status).toBe(200);
    expect(got.body.organization.name).toBe("Json Org");
  });

  it("answers not_found for an unknown organization", async () => {
    const got = await postJson(server.url, rpc("GetOrganization"), { orgId: "or-aaaaa-bbbbb-cccccccccccccccc" }, auth);
    expect(got.status).toBe(404);
    expect(got.body.code).toBe("not_found");
  });

  it("pages through all of them without repeats", async () => {
    for (let i = 0; i < 5; i++) await admin.call("createOrganization", { name: `Paged ${i}` }, auth);
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = succeeded(await admin.call("listOrganizations", { pageSize: 2, pageToken: token }, auth));
      expect(page.organizations.length).toBeLessThanOrEqual(2);
      seen.push(...page.organizations.map((o) => o.id));
      token = page.nextPageToken;
      pages++;
    } while (token);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.length).toBeGreaterThanOrEqual(7);
    expect(pages).toBe(Math.ceil(seen.length / 2) + (seen.length % 2 === 0 ? 1 : 0));
  });

  it("rejects a page token it did not give", async () => {
    const res = await postJson(server.url, rpc("ListOrganizations"), { pageToken: "not-a-token" }, auth);
    expect(res.status).toBe(400);
    expect(res.body.message).toContain("page_token");
  });

  it("answers a forged page token invalid_argument on every listing, however well its JSON is formed, and logs no error", async () => {
    const orgId = succeeded(await admin.call("createOrganization", { name: "Forged pages" }, auth)).organization!.id;
    const token = (cursor: unknown) => Buffer.from(JSON.stringify(cursor)).toString("base64url");
    const uuid = "0190a3b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b";
    const forged = {
      "an id of another shape": ["2020-01-01T00:00:00.000Z", "x"],
      "a NUL in the id": ["2020-01-01T00:00:00.000Z", `${uuid}\u0000`],
      "year 10000": ["+010000-01-01T00:00:00.000Z", uuid],
      "year 0": ["0000-01-01T00:00:00.000Z", uuid],
      "a day that does not exist": ["2020-02-30T00:00:00.000Z", uuid],
      "a time without its form": ["1 Jan 2020", uuid],
      "an id that is not a string": ["2020-01-01T00:00:00.000Z", 7],
      "a third element": ["2020-01-01T00:00:00.000Z", uuid, "more"],
      "an object": { at: "2020-01-01T00:00:00.000Z", id: uuid },
    };
    const listings = [
      ["ListOrganizations", {}],
      ["ListIdentities", { orgId }],
      ["ListCourierMessages", { orgId }],
    ] as const;
    const errorsBefore = server.logs.filter((l) => /"level":(50|60|"error"|"fatal")/.test(l)).length;
    for (const [method, body] of listings) {
      for (const [what, cursor] of Object.entries(forged)) {
        const res = await postJson(server.url, rpc(method), { ...body, pageToken: token(cursor) }, auth);
        expect([res.status, res.body.code], `${method}, ${what}`).toEqual([400, "invalid_argument"]);
        expect(res.body.message, `${method}, ${what}`).toContain("page_token");
      }
    }
    expect(server.logs.filter((l) => /"level":(50|60|"error"|"fatal")/.test(l)).length).toBe(errorsBefore);
    // A token this server wrote still turns the page.
    for (let i = 0; i < 2; i++) await admin.call("createIdentity", { orgId, username: `paged-${i}@example.com`, skipRegistrationCode: true }, auth);
    const first = succeeded(await admin.call("listIdentities", { orgId, pageSize: 1 }, auth));
    const second = succeeded(await admin.call("listIdentities", { orgId, pageSize: 1, pageToken: first.nextPageToken }, auth));
    expect(second.identities.map((i) => i.username)).not.toEqual(first.identities.map((i) => i.username));
    expect(second.identities).toHaveLength(1);
  });
});

describe("identities", () => {
  let orgId: string;
  beforeAll(async () => {
    const r = await admin.call("createOrganization", { name: "People" }, auth);
    if (!r.ok) throw r.error;
    orgId = r.value.organization!.id;
  });

  it("creates a pending identity and finds it by id", async () => {
    const identity = succeeded(await admin.call("createIdentity", { orgId, username: "Alice@Example.com", skipRegistrationCode: true }, auth)).identity!;
    expect(identity.state).toBe(IdentityState.PENDING);
    expect(identity.username).toBe("Alice@Example.com");
    expect(identity.orgId).toBe(orgId);
    expect(identity.id).toMatch(/^[0-9a-f-]{36}$/);
    const got = await postJson(server.url, rpc("GetIdentity"), { identityId: identity.id }, auth);
    expect(got.status).toBe(200);
    expect(got.body.identity.username).toBe("Alice@Example.com");
    expect(got.body.identity.state).toBe("IDENTITY_STATE_PENDING");
  });

  it("refuses a duplicate username in the same organization, case-insensitively", async () => {
    await admin.call("createIdentity", { orgId, username: "bob@example.com", skipRegistrationCode: true }, auth);
    const dup = await admin.call("createIdentity", { orgId, username: "BOB@example.COM", skipRegistrationCode: true }, auth);
    expect(failed(dup).code).toBe(status.ALREADY_EXISTS);
    const dupJson = await postJson(server.url, rpc("CreateIdentity"), { orgId, username: "Bob@Example.com", skipRegistrationCode: true }, auth);
    expect(dupJson.status).toBe(409);
    expect(dupJson.body.code).toBe("already_exists");
    expect(dupJson.body.message).toContain("username");
  });

  it("allows the same username in another organization", async () => {
    const other = await admin.call("createOrganization", { name: "Elsewhere" }, auth);
    if (!other.ok) throw other.error;
    const r = await admin.call("createIdentity", { orgId: other.value.organization!.id, username: "bob@example.com", skipRegistrationCode: true }, auth);
    expect(r.ok).toBe(true);
  });

  it("answers not_found for an identity in an unknown organization, or an unknown identity", async () => {
    const r = await postJson(server.url, rpc("CreateIdentity"), { orgId: "or-zzzzz-zzzzz-zzzzzzzzzzzzzzzz", username: "x@example.com" }, auth);
    expect(r.status).toBe(404);
    const g = await postJson(server.url, rpc("GetIdentity"), { identityId: "00000000-0000-4000-8000-000000000000" }, auth);
    expect(g.status).toBe(404);
  });

  it("lists an organization's identities in pages", async () => {
    const org = await admin.call("createOrganization", { name: "Many" }, auth);
    if (!org.ok) throw org.error;
    const id = org.value.organization!.id;
    for (let i = 0; i < 7; i++) await admin.call("createIdentity", { orgId: id, username: `user${i}@example.com`, skipRegistrationCode: true }, auth);
    const names: string[] = [];
    let token = "";
    do {
      const page = await postJson(server.url, rpc("ListIdentities"), { orgId: id, pageSize: 3, pageToken: token }, auth);
      expect(page.status).toBe(200);
      names.push(...page.body.identities.map((i: { username: string }) => i.username));
      token = page.body.nextPageToken ?? "";
    } while (token);
    expect(names).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => `user${i}@example.com`));
  });

  it("disables and re-enables an identity", async () => {
    const c = await admin.call("createIdentity", { orgId, username: "carol@example.com", skipRegistrationCode: true }, auth);
    if (!c.ok) throw c.error;
    const id = c.value.identity!.id;
    const d = await admin.call("setIdentityState", { identityId: id, state: IdentityState.DISABLED }, auth);
    expect(d.ok && d.value.identity?.state).toBe(IdentityState.DISABLED);
    const e = await postJson(server.url, rpc("SetIdentityState"), { identityId: id, state: "IDENTITY_STATE_ACTIVE" }, auth);
    expect(e.body.identity.state).toBe("IDENTITY_STATE_ACTIVE");
    const bad = await postJson(server.url, rpc("SetIdentityState"), { identityId: id, state: "IDENTITY_STATE_PENDING" }, auth);
    expect(bad.status).toBe(400);
    expect(bad.body.message).toContain("state");
  });
});

describe("validation from the proto rules", () => {
  it("names the field and the rule of a malformed org id, over both protocols", async () => {
    const j = await postJson(server.url, rpc("GetOrganization"), { orgId: "org-123" }, auth);
    expect(j.status).toBe(400);
    expect(j.body.code).toBe("invalid_argument");
    expect(j.body.message).toContain("org_id");
    expect(j.body.message).toContain("^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$");
    const g = failed(await admin.call("getOrganization", { orgId: "org-123" }, auth));
    expect(g.code).toBe(status.INVALID_ARGUMENT);
    expect(g.details).toContain("org_id");
  });

  it("accepts the documented org id with 17 characters in its last part", async () => {
    const r = await postJson(server.url, rpc("GetOrganization"), { orgId: "or-34513-nip9c-8bppvgqgj28dbodrc" }, auth);
    expect(r.status).toBe(404);
  });

  it("rejects a bad uuid, a non-email username, a too-large page and an empty name", async () => {
    const cases: [string, unknown, string][] = [
      ["GetIdentity", { identityId: "123" }, "identity_id"],
      ["CreateIdentity", { orgId: "or-aaaaa-bbbbb-cccccccccccccccc", username: "not an email" }, "username"],
      ["ListOrganizations", { pageSize: 100000 }, "page_size"],
      ["CreateOrganization", { name: "" }, "name"],
      ["CreateOrganization", { name: "x".repeat(201) }, "name"],
    ];
    for (const [method, body, field] of cases) {
      const r = await postJson(server.url, rpc(method), body, auth);
      expect(r.status, method).toBe(400);
      expect(r.body.message, method).toContain(field);
    }
  });

  it("rejects an unknown JSON field by name", async () => {
    const r = await postJson(server.url, rpc("CreateOrganization"), { name: "x", colour: "red" }, auth);
    expect(r.status).toBe(400);
    expect(r.body.message).toContain("colour");
  });

  it("refuses a body over the size limit and stays up", async () => {
    const r = await postJson(server.url, rpc("CreateOrganization"), { name: "x".repeat(200_000) }, auth);
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect((await postJson(server.url, rpc("ListOrganizations"), {}, auth)).status).toBe(200);
  });

  it("never leaks internals for malformed JSON", async () => {
    const r = await postJson(server.url, rpc("CreateOrganization"), "{not json", auth);
    expect(r.status).toBe(400);
    expect(JSON.stringify(r.body)).not.toMatch(/at .*\.(ts|js):\d+/);
  });
});
