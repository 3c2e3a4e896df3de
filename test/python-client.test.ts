// The Python client (clients/python) against the live server over gRPC: stubs
// generated from proto/ with protoc and Debian's grpc_python_plugin, run with
// Debian's python3-grpcio (test/support/python.ts).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { ADMIN_TOKEN, startTestServer, type TestServer } from "./support/server.ts";
import { adminFixtures } from "./support/fixtures.ts";
import { codeFrom, SmtpSink } from "./support/smtp.ts";
import { PYTHON, PYTHON_CLIENT, pythonSkipReason } from "./support/python.ts";

const CLIENT = PYTHON_CLIENT;
const reason = pythonSkipReason("python client");

interface Python {
  /** Resolves with the n-th line (1-based) the program printed on stdout. */
  line(n: number): Promise<string>;
  write(text: string): void;
  exit: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

describe.skipIf(reason !== undefined)(`the Python client over gRPC${reason ? ` (skipped: ${reason})` : ""}`, () => {
  let smtp: SmtpSink;
  let server: TestServer;
  let fx: ReturnType<typeof adminFixtures>;
  let stubs: string;

  function python(args: string[], env: Record<string, string> = {}): Python {
    const child = spawn(PYTHON, [join(CLIENT, "login_roundtrip.py"), ...args], {
      env: { PATH: process.env.PATH ?? "", PYTHONPATH: stubs, CODEGATE_SERVER: new URL(server.url).host, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const killer = setTimeout(() => child.kill(), 30_000);
    let stdout = "";
    let stderr = "";
    const waiters: (() => void)[] = [];
    child.stdout.on("data", (d) => {
      stdout += d;
      for (const w of waiters.splice(0)) w();
    });
    child.stderr.on("data", (d) => (stderr += d));
    const exit = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      child.on("close", (code) => {
        clearTimeout(killer);
        for (const w of waiters.splice(0)) w();
        resolve({ code, stdout, stderr });
      }),
    );
    let exited = false;
    exit.then(() => (exited = true));
    return {
      async line(n) {
        for (;;) {
          const lines = stdout.split("\n");
          if (lines.length > n) return lines[n - 1];
          if (exited) throw new Error(`python exited before printing line ${n}: ${stderr}`);
          await new Promise<void>((r) => waiters.push(r));
        }
      },
      write: (text) => child.stdin.write(text),
      exit,
    };
  }

  beforeAll(async () => {
    stubs = mkdtempSync(join(tmpdir(), "codegate-py-"));
    const gen = spawnSync("bash", [join(CLIENT, "generate.sh"), stubs], { encoding: "utf8" });
    if (gen.status !== 0) throw new Error(`generate.sh failed: ${gen.stderr}`);
    smtp = await SmtpSink.create();
    server = await startTestServer({ SMTP_URL: smtp.url });
    fx = adminFixtures(server.url);
  });
  afterAll(async () => {
    fx?.close();
    await server?.close();
    await smtp?.stop();
    if (stubs) rmSync(stubs, { recursive: true, force: true });
  });

  it("creates an organization and an identity with the admin token", async () => {
    const org = await python(["admin", "create-organization", "--name", "Py Org"], { CODEGATE_ADMIN_TOKEN: ADMIN_TOKEN }).exit;
    expect(org.stderr).toBe("");
    expect(org.code).toBe(0);
    const created = JSON.parse(org.stdout).organization;
    expect(created.id).toMatch(/^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{16}$/);
    expect(created.name).toBe("Py Org");
    // It is really there, as a grpc-js caller sees it.
    const got = await fx.admin.call("getOrganization", { orgId: created.id }, { authorization: `Bearer ${ADMIN_TOKEN}` });
    expect(got.ok && got.value.organization?.tenantId).toBe(created.tenant_id);

    const ident = await python(["admin", "create-identity", "--org", created.id, "--username", "py@example.com", "--skip-registration-code"], {
      CODEGATE_ADMIN_TOKEN: ADMIN_TOKEN,
    }).exit;
    expect(ident.code).toBe(0);
    expect(JSON.parse(ident.stdout).identity).toMatchObject({ org_id: created.id, username: "py@example.com", state: "IDENTITY_STATE_PENDING" });
  });

  it("reports a refused admin token as UNAUTHENTICATED, without echoing it", async () => {
    const token = "cga_wrongwrongwr_" + "x".repeat(43);
    const r = await python(["admin", "create-organization", "--name", "Nope"], { CODEGATE_ADMIN_TOKEN: token }).exit;
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^error: UNAUTHENTICATED: /);
    expect(r.stderr).not.toContain(token);
  });

  it("reports the field a malformed request got wrong", async () => {
    const r = await python(["send", "--org", "or-nope", "--username", "py@example.com"]).exit;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: INVALID_ARGUMENT: .*org_id/);
  });

  it("does the login round trip: the code from the mail gives the identity and a proof token", async () => {
    const org = await fx.org("Py Login");
    const alice = await fx.identity(org.id, "py-alice@example.com");
    const before = smtp.mailsTo("py-alice@example.com").length;

    const p = python(["login", "--org", org.id, "--username", "py-alice@example.com"]);
    expect(JSON.parse(await p.line(1))).toEqual({ message: "success" });
    const code = codeFrom(await smtp.nextMailTo("py-alice@example.com", before));
    p.write(code + "\n");
    const done = await p.exit;
    expect(done.stderr).toBe("code from the mail:\n");
    expect(done.code).toBe(0);

    const verified = JSON.parse(await p.line(2));
    expect(verified.identity).toMatchObject({ id: alice.id, org_id: org.id, username: "py-alice@example.com", state: "IDENTITY_STATE_ACTIVE" });
    const jwks = createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`));
    const { payload } = await jwtVerify(verified.token, jwks, { issuer: server.app.config.token.issuer, audience: "codegate" });
    expect(payload).toMatchObject({ sub: alice.id, org: org.id, purpose: "login" });
    expect(Date.parse(verified.token_expires_at) / 1000).toBe(payload.exp);

    // The code was consumed: a second verify with it fails.
    const again = await python(["verify", "--org", org.id, "--username", "py-alice@example.com"], { CODEGATE_CODE: code }).exit;
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error: [A-Z_]+: /);
  });
});
