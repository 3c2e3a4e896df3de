// CodeService.GetCodeFormat: the length, alphabet and lifespan of an
// organization's codes for a purpose, over Connect (the client package), grpc-js
// and REST; the server's settings with the organization's overrides, exactly as
// codes are made; the same answer for an unknown organization as for one without
// overrides; bad input named by field.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { status } from "@grpc/grpc-js";
import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, CodePurpose, codegateError, createCodegateWebClients, type CodegateClients } from "@codegate/client/web";
import { CodeService } from "../gen/codegate/v1/code_pb.ts";
import { CodePurpose as ServerCodePurpose, type Organization } from "../gen/codegate/v1/types_pb.ts";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { bearer, grpcClient, postJson } from "./support/clients.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { failed, succeeded } from "./support/results.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";

const UNKNOWN_ORG = "or-aaaaa-bbbbb-cccccccccccccccc";
const UNKNOWN_TENANT = "acct-aaaaa-bbbbb-cccccccccccccccc";
const REGISTRATION_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

let smtp: SmtpSink;
let server: TestServer;
let connect: CodegateClients;
let grpc: ReturnType<typeof grpcClient<typeof CodeService>>;
let fx: ReturnType<typeof adminFixtures>;
/** An organization with its own login codes: 8 of A to H, 5 minutes. */
let custom: Organization;
/** An organization that keeps the server's settings. */
let plain: Organization;

beforeAll(async () => {
  smtp = await SmtpSink.create();
  server = await startTestServer({
    SMTP_URL: smtp.url,
    CODE_REGISTRATION_LENGTH: "8",
    CODE_REGISTRATION_ALPHABET: REGISTRATION_ALPHABET,
    CODE_RECOVERY_LIFESPAN: "45m",
  });
  connect = createCodegateWebClients({ baseUrl: server.url });
  grpc = grpcClient(CodeService, server.url);
  fx = adminFixtures(server.url);
  custom = await fx.org("Custom Codes", { loginCode: { length: 8, alphabet: "ABCDEFGH", lifespan: { seconds: 300n } } });
  plain = await fx.org("Plain Codes");
});

afterAll(async () => {
  grpc?.close();
  fx?.close();
  await server?.close();
  await smtp?.stop();
});

interface RestAnswer {
  status: number;
  headers: Headers;
  body: any;
}

async function restFormat(query: string, method = "GET"): Promise<RestAnswer> {
  const res = await fetch(`${server.url}/auth/code/format?${query}`, { method });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

/** The server's own settings (CODE_<PURPOSE>_* of this file's server), as protobuf JSON. */
const SERVER_FORMATS = {
  login: { purpose: "CODE_PURPOSE_LOGIN", length: 6, alphabet: "0123456789", lifespan: "600s" },
  registration: { purpose: "CODE_PURPOSE_REGISTRATION", length: 8, alphabet: REGISTRATION_ALPHABET, lifespan: "86400s" },
  recovery: { purpose: "CODE_PURPOSE_RECOVERY", length: 6, alphabet: "0123456789", lifespan: "2700s" },
};

describe("the answer", () => {
  it("is the server's settings for each purpose, alike over Connect, grpc-js and REST", async () => {
    const purposes = [
      [CodePurpose.LOGIN, SERVER_FORMATS.login],
      [CodePurpose.REGISTRATION, SERVER_FORMATS.registration],
      [CodePurpose.RECOVERY, SERVER_FORMATS.recovery],
    ] as const;
    for (const [purpose, expected] of purposes) {
      const c = await connect.code.getCodeFormat({ orgId: plain.id, purpose });
      expect({ purpose: c.purpose, length: c.length, alphabet: c.alphabet, lifespanMs: durationMs(c.lifespan!) }, expected.purpose).toEqual({
        purpose,
        length: expected.length,
        alphabet: expected.alphabet,
        lifespanMs: parseInt(expected.lifespan) * 1000,
      });

      const g = succeeded(await grpc.call("getCodeFormat", { orgId: plain.id, purpose: purpose as number as ServerCodePurpose }));
      expect([g.purpose, g.length, g.alphabet, durationMs(g.lifespan!)]).toEqual([purpose, c.length, c.alphabet, durationMs(c.lifespan!)]);

      const r = await restFormat(`orgId=${plain.id}&purpose=${expected.purpose}`);
      expect(r.status).toBe(200);
      expect(r.body).toEqual(expected);
    }
  });

  it("is the organization's overrides, named by org_id or by tenant_id, and its codes are made so", async () => {
    const byOrg = await restFormat(`orgId=${custom.id}&purpose=CODE_PURPOSE_LOGIN`);
    const byTenant = await restFormat(`tenantId=${custom.tenantId}&purpose=CODE_PURPOSE_LOGIN`);
    const byBoth = await restFormat(`orgId=${custom.id}&tenantId=${custom.tenantId}&purpose=1`);
    for (const r of [byOrg, byTenant, byBoth]) {
      expect(r.status).toBe(200);
      expect(r.body).toEqual({ purpose: "CODE_PURPOSE_LOGIN", length: 8, alphabet: "ABCDEFGH", lifespan: "300s" });
    }
    // A purpose it does not override keeps the server's.
    expect((await restFormat(`orgId=${custom.id}&purpose=CODE_PURPOSE_REGISTRATION`)).body).toEqual(SERVER_FORMATS.registration);

    // The format a client is told is the one of the code in the mail.
    await fx.identity(custom.id, "format@example.com", "active");
    await connect.login.sendLoginCode({ username: "format@example.com", orgId: custom.id });
    const { length, alphabet } = byOrg.body;
    expect(codeFrom(await smtp.nextMailTo("format@example.com"))).toMatch(new RegExp(`^[${alphabet}]{${length}}$`));
  });

  it("cannot be set to an alphabet with a character twice, or past U+FFFF: the setting is refused, naming it, not kept and ignored", async () => {
    const update = (settings: Record<string, unknown>) =>
      postJson(server.url, "/codegate.v1.AdminService/UpdateOrganizationSettings", { orgId: plain.id, settings }, bearer(ADMIN_TOKEN));
    for (const [field, alphabet] of [["loginCode", "aa"], ["recoveryCode", "0123456789AA"], ["registrationCode", "😀😁😂😃😄😅😆😇😈😉"]] as const) {
      const res = await update({ [field]: { alphabet } });
      expect(res.status, `${field} ${alphabet}`).toBe(400);
      expect(res.body.message, `${field} ${alphabet}`).toContain(`settings.${field.replace("C", "_c")}.alphabet`);
    }
    const format = await connect.code.getCodeFormat({ orgId: plain.id, purpose: CodePurpose.LOGIN });
    expect(format.alphabet).toBe("0123456789");
    const got = await postJson(server.url, "/codegate.v1.AdminService/GetOrganization", { orgId: plain.id }, bearer(ADMIN_TOKEN));
    expect(got.body.organization.settings?.loginCode).toBeUndefined();
  });

  it("is the same for an unknown organization, an org_id and a tenant_id that disagree, and an organization without overrides", async () => {
    const asked = [
      `orgId=${plain.id}&purpose=CODE_PURPOSE_LOGIN`,
      `orgId=${UNKNOWN_ORG}&purpose=CODE_PURPOSE_LOGIN`,
      `tenantId=${UNKNOWN_TENANT}&purpose=CODE_PURPOSE_LOGIN`,
      // The overriding organization's id with another one's tenant: no organization, so not its codes.
      `orgId=${custom.id}&tenantId=${plain.tenantId}&purpose=CODE_PURPOSE_LOGIN`,
    ];
    const answers = await Promise.all(asked.map((q) => restFormat(q)));
    for (const [i, a] of answers.entries()) {
      expect(a.status, asked[i]).toBe(200);
      expect(a.body, asked[i]).toEqual(SERVER_FORMATS.login);
      expect(a.headers.get("content-length"), asked[i]).toBe(answers[0].headers.get("content-length"));
    }
    const unknown = await connect.code.getCodeFormat({ orgId: UNKNOWN_ORG, purpose: CodePurpose.RECOVERY });
    const known = await connect.code.getCodeFormat({ orgId: plain.id, purpose: CodePurpose.RECOVERY });
    expect(unknown).toEqual(known);
  });

  it("says nothing about any user: the four fields only, and no username is taken", async () => {
    const r = await restFormat(`orgId=${plain.id}&purpose=CODE_PURPOSE_RECOVERY`);
    expect(Object.keys(r.body).sort()).toEqual(["alphabet", "length", "lifespan", "purpose"]);
    const withUser = await restFormat(`orgId=${plain.id}&purpose=CODE_PURPOSE_RECOVERY&username=jdoe@example.com`);
    expect(withUser.status).toBe(400);
    expect(withUser.body.error.message).toContain("username");
  });
});

describe("bad input", () => {
  it("is invalid_argument naming the field, over Connect with the violations decoded", async () => {
    const cases: [Parameters<CodegateClients["code"]["getCodeFormat"]>[0], string, string][] = [
      [{ orgId: plain.id }, "purpose", "enum.not_in"],
      [{ orgId: plain.id, purpose: 9 as CodePurpose }, "purpose", "enum.defined_only"],
      [{ orgId: "org-123", purpose: CodePurpose.LOGIN }, "org_id", "string.pattern"],
      [{ tenantId: "or-aaaaa-bbbbb-cccccccccccccccc", purpose: CodePurpose.LOGIN }, "tenant_id", "string.pattern"],
      [{ purpose: CodePurpose.LOGIN }, "", "org_id_or_tenant_id"],
    ];
    for (const [req, field, rule] of cases) {
      const e = codegateError(await connect.code.getCodeFormat(req).then(() => undefined, (err: unknown) => err));
      expect(e.code, rule).toBe(Code.InvalidArgument);
      expect(e.violations.map((v) => [v.field, v.rule]), rule).toEqual([[field, rule]]);
      expect(e.message, rule).toContain(field || "org_id or tenant_id is required");
    }
  });

  it("is INVALID_ARGUMENT over grpc-js and a 400 in the documented shape over REST", async () => {
    const g = failed(await grpc.call("getCodeFormat", { orgId: plain.id }));
    expect(g.code).toBe(status.INVALID_ARGUMENT);
    expect(g.details).toContain("purpose");

    const cases: [string, string][] = [
      [`orgId=${plain.id}`, "purpose"],
      [`orgId=${plain.id}&purpose=CODE_PURPOSE_BOGUS`, "CODE_PURPOSE_BOGUS"],
      [`orgId=org-123&purpose=CODE_PURPOSE_LOGIN`, "org_id"],
      [`purpose=CODE_PURPOSE_LOGIN`, "org_id or tenant_id"],
      [`orgId=${plain.id}&purpose=CODE_PURPOSE_LOGIN&purpose=CODE_PURPOSE_RECOVERY`, "purpose"],
    ];
    for (const [query, named] of cases) {
      const r = await restFormat(query);
      expect(r.status, query).toBe(400);
      expect(r.body.error).toEqual({ code: 400, status: "Bad Request", reason: "INVALID_ARGUMENT", message: expect.stringContaining(named), request: r.headers.get("x-request-id") });
    }
  });

  it("is a 405 for another HTTP method on the route", async () => {
    const r = await restFormat(`orgId=${plain.id}&purpose=CODE_PURPOSE_LOGIN`, "POST");
    expect(r.status).toBe(405);
    expect(r.headers.get("allow")).toBe("GET");
  });
});
