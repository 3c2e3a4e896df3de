import { afterAll, describe, expect, it, vi } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startApp } from "../src/server/app.ts";
import { loadConfig } from "../src/config/config.ts";
import { createLogger } from "../src/lib/log.ts";
import { migrate, openOrm, pendingMigrations } from "../src/store/orm.ts";
import { EmbeddedDatabaseBusy, lockEmbeddedDatabase } from "../src/store/embedded-lock.ts";
import { ListingOrder } from "../src/store/migrations/20261203-listing-order.ts";
import pg from "pg";
import { createLocalJWKSet, jwtVerify } from "jose";
import { freshDatabase } from "./support/server.ts";
import { bearer, postJson } from "./support/clients.ts";

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), "codegate-storage-"));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe("migrations on PostgreSQL", () => {
  it("bring an empty database exactly to the entities' schema", async () => {
    const orm = await openOrm({ databaseUrl: await freshDatabase({ empty: true }), dataDir: tempDir(), dbPoolSize: 2 });
    try {
      expect(await pendingMigrations(orm)).not.toHaveLength(0);
      await migrate(orm);
      expect(await pendingMigrations(orm)).toHaveLength(0);
      // Every entity change needs its migration: the diff must be empty.
      expect((await orm.schema.getUpdateSchemaSQL()).trim()).toBe("");
    } finally {
      await orm.close();
    }
  });

  it("run from the migrate command, and a second run has nothing to do", async () => {
    const env = { ...process.env, DATABASE_URL: await freshDatabase({ empty: true }), DATA_DIR: tempDir() };
    const node = process.execPath;
    const first = execFileSync(node, ["src/main.ts", "migrate"], { env, encoding: "utf8" });
    expect(first).toContain("applied: 20261123-initial");
    const second = execFileSync(node, ["src/main.ts", "migrate"], { env, encoding: "utf8" });
    expect(second).toContain("up to date");
  });

  it("admin-token create makes a token of all scopes, and with --delivery one for DeliveryService only; existing tokens keep all", async () => {
    const databaseUrl = await freshDatabase({ empty: true });
    const before = await openOrm({ databaseUrl, dataDir: tempDir(), dbPoolSize: 1 });
    try {
      await before.migrator.up({ to: "20261207-retention-order" });
      await before.em.getConnection().execute("insert into admin_token (id, secret_hash, name, created_at) values ('older0000000', '\\x00', 'older', now() - interval '1 day')");
    } finally {
      await before.close();
    }
    const env = { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: tempDir() };
    const create = (...args: string[]) => execFileSync(process.execPath, ["src/main.ts", "admin-token", "create", ...args], { env, encoding: "utf8" });
    const admin = create("operator");
    const delivery = create("--delivery", "sms worker");
    // A mistyped flag is refused, not taken for the name of a token of every scope.
    expect(() => execFileSync(process.execPath, ["src/main.ts", "admin-token", "create", "--delivry", "typo"], { env, encoding: "utf8", stdio: "pipe" })).toThrow(/unknown option --delivry/);
    expect(admin).toMatch(/^admin token [a-z0-9]{12} /);
    expect(delivery).toMatch(/^delivery token \(DeliveryService only\) [a-z0-9]{12} /);
    const db = new pg.Client(databaseUrl);
    await db.connect();
    try {
      const rows = (await db.query("select name, scope from admin_token order by created_at, name")).rows;
      expect(rows).toEqual([
        { name: "older", scope: "admin" },
        { name: "operator", scope: "admin" },
        { name: "sms worker", scope: "delivery" },
      ]);
    } finally {
      await db.end();
    }
  });

  it("run from the migrate command without the requests' statement timeout: an index on a large table takes longer", async () => {
    const databaseUrl = await freshDatabase({ empty: true });
    const before = await openOrm({ databaseUrl, dataDir: tempDir(), dbPoolSize: 1 });
    try {
      await before.migrator.up({ to: "20261202-events" });
    } finally {
      await before.close();
    }
    const db = new pg.Client(databaseUrl);
    await db.connect();
    try {
      await db.query(
        `insert into identity (org_id, id, username, username_normalized, state, created_at)
         select 'or-large', gen_random_uuid(), 'u' || g, 'u' || g, 'active', now() - g * interval '1 second' from generate_series(1, 400000) g`,
      );
      const env = { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: tempDir(), DATABASE_STATEMENT_TIMEOUT: "100ms" };
      const out = execFileSync(process.execPath, ["src/main.ts", "migrate"], { env, encoding: "utf8" });
      expect(out).toContain("applied: 20261203-listing-order");
      const { rows } = await db.query(`select indisvalid from pg_index where indexrelid = 'identity_org_created_idx'::regclass`);
      expect(rows).toEqual([{ indisvalid: true }]);
    } finally {
      await db.end();
    }
  });

  it("build the listing indexes CONCURRENTLY on PostgreSQL (the table takes writes meanwhile), plainly on the embedded PGlite", async () => {
    const queries = async (orm: Awaited<ReturnType<typeof openOrm>>) => {
      const migration = new ListingOrder(orm.driver, orm.config);
      migration.up();
      return migration.getQueries().map(String);
    };
    const onPostgres = await openOrm({ databaseUrl: await freshDatabase({ empty: true }), dataDir: tempDir(), dbPoolSize: 1 });
    const onPglite = await openOrm({ databaseUrl: undefined, dataDir: tempDir(), dbPoolSize: 1 });
    try {
      const online = await queries(onPostgres);
      expect(online.filter((q) => q.startsWith("create index"))).toHaveLength(3);
      expect(online.every((q) => / concurrently /.test(q))).toBe(true);
      expect((await queries(onPglite)).some((q) => /concurrently/.test(q))).toBe(false);
    } finally {
      await onPostgres.close();
      await onPglite.close();
    }
  });

  it("run by servers starting together: one applies them, the others wait and find nothing to do", async () => {
    const databaseUrl = await freshDatabase({ empty: true });
    const env = { ...process.env, DATABASE_URL: databaseUrl, DATA_DIR: tempDir() };
    const runs = await Promise.all(
      [1, 2, 3].map(
        () =>
          new Promise<{ code: number | null; out: string }>((resolve) => {
            const child = spawn(process.execPath, ["src/main.ts", "migrate"], { env, stdio: ["ignore", "pipe", "pipe"] });
            let out = "";
            child.stdout.on("data", (d) => (out += d));
            child.stderr.on("data", (d) => (out += d));
            child.on("close", (code) => resolve({ code, out }));
          }),
      ),
    );
    expect(runs.map((r) => r.code)).toEqual([0, 0, 0]);
    expect(runs.filter((r) => r.out.includes("applied: 20261123-initial"))).toHaveLength(1);
    expect(runs.filter((r) => r.out.includes("up to date"))).toHaveLength(2);
    const orm = await openOrm({ databaseUrl, dataDir: tempDir(), dbPoolSize: 1 });
    try {
      expect(await pendingMigrations(orm)).toHaveLength(0);
    } finally {
      await orm.close();
    }
  });
});

describe("the embedded default", () => {
  it("is opened by one process at a time: while a server holds DATA_DIR, a command on it is refused, naming the server; a lock left by a dead process is taken over", async () => {
    const dataDir = tempDir();
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir };
    delete env.DATABASE_URL;
    const create = () => execFileSync(process.execPath, ["src/main.ts", "admin-token", "create", "operator"], { env, encoding: "utf8", stdio: "pipe" });
    const app = await startApp(loadConfig({ HOST: "127.0.0.1", PORT: "0", OPS_PORT: "0", DATA_DIR: dataDir }), { log: createLogger("silent") });
    let refused: { status?: number; stderr?: string } = {};
    try {
      create();
    } catch (err) {
      refused = err as typeof refused;
    }
    await app.close();
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`is open in process ${process.pid}: the embedded PGlite serves one process`);
    // Let go when the server stops: the command runs, and lets go in turn.
    expect(create()).toMatch(/^admin token /);
    expect(existsSync(join(dataDir, "pglite.lock"))).toBe(false);
    // A process that died holding it (no process has this pid: Linux's are below 2^22).
    writeFileSync(join(dataDir, "pglite.lock"), "99999999");
    expect(create()).toMatch(/^admin token /);
  });

  // Linux: the lock names the boot and the start time from /proc.
  it.runIf(process.platform === "linux")("takes over a lock whose pid now belongs to another process, or was written before a reboot; a live holder keeps it", async () => {
    const dir = tempDir();
    const lock = join(dir, "pglite.lock");
    // A live process that is not a server: its pid, as a lock from before a crash might name it.
    const other = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      await vi.waitFor(() => expect(readFileSync(`/proc/${other.pid}/stat`, "utf8")).toContain("(sleep)"));
      const stat = readFileSync(`/proc/${other.pid}/stat`, "utf8");
      const started = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19]!;
      const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
      const takeOver = (text: string) => {
        writeFileSync(lock, text);
        lockEmbeddedDatabase(lock, "the database")();
        return existsSync(lock);
      };
      // The pid, the boot and the start time all name the live process: it holds the lock.
      writeFileSync(lock, `${other.pid} ${boot} ${started}`);
      expect(() => lockEmbeddedDatabase(lock, "the database")).toThrow(new EmbeddedDatabaseBusy(`the database is open in process ${other.pid}: the embedded PGlite serves one process. Stop that process first, or set DATABASE_URL to share a PostgreSQL server`));
      expect(readFileSync(lock, "utf8")).toBe(`${other.pid} ${boot} ${started}`);
      // The pid was reused by a process started at another time, or the lock is from an earlier boot: taken over, and let go.
      expect(takeOver(`${other.pid} ${boot} ${Number(started) - 1}`)).toBe(false);
      expect(takeOver(`${other.pid} 00000000-0000-0000-0000-000000000000 ${started}`)).toBe(false);
      // A process that died (no process has this pid: Linux's are below 2^22).
      expect(takeOver(`99999999 ${boot} ${started}`)).toBe(false);
      // A lock naming only a pid (before locks named their process) is held while that pid lives.
      writeFileSync(lock, String(other.pid));
      expect(() => lockEmbeddedDatabase(lock, "the database")).toThrow(EmbeddedDatabaseBusy);
      // This process's lock names it whole.
      rmSync(lock);
      const release = lockEmbeddedDatabase(lock, "the database");
      const own = readFileSync(`/proc/${process.pid}/stat`, "utf8");
      expect(readFileSync(lock, "utf8")).toBe(`${process.pid} ${boot} ${own.slice(own.lastIndexOf(")") + 2).split(" ")[19]}`);
      // Written beside it and linked in whole: nothing else is left in the directory.
      expect(readdirSync(dir)).toEqual(["pglite.lock"]);
      release();
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      other.kill();
    }
  });

  it("starts on PGlite in DATA_DIR, serves, and keeps its data across restarts", async () => {
    const dataDir = tempDir();
    const config = loadConfig({ HOST: "127.0.0.1", PORT: "0", OPS_PORT: "0", DATA_DIR: dataDir });
    expect(config.databaseUrl).toBeUndefined();
    const log = createLogger("silent");
    const first = await startApp(config, { log });
    const token = first.firstAdminToken!;
    expect(token).toMatch(/^cga_/);
    const created = await postJson(first.url, "/codegate.v1.AdminService/CreateOrganization", { name: "Embedded" }, bearer(token));
    expect(created.status).toBe(200);
    await first.close();

    const second = await startApp(config, { log });
    // The first token is printed once, not again.
    expect(second.firstAdminToken).toBeUndefined();
    const got = await postJson(second.url, "/codegate.v1.AdminService/GetOrganization", { orgId: created.body.organization.id }, bearer(token));
    expect(got.status).toBe(200);
    expect(got.body.organization.name).toBe("Embedded");

    // A login round trip on PGlite: the send's statement, the courier's (.eml files), the verification's.
    const orgId = created.body.organization.id;
    const identity = await postJson(second.url, "/codegate.v1.AdminService/CreateIdentity", { orgId, username: "embedded@example.com", skipRegistrationCode: true }, bearer(token));
    expect(identity.status).toBe(200);
    const activated = await postJson(second.url, "/codegate.v1.AdminService/SetIdentityState", { identityId: identity.body.identity.id, state: "IDENTITY_STATE_ACTIVE" }, bearer(token));
    expect(activated.status).toBe(200);
    expect((await postJson(second.url, "/codegate.v1.LoginService/SendLoginCode", { orgId, username: "embedded@example.com" })).status).toBe(200);
    const mailDir = join(dataDir, "mail");
    const eml = await vi.waitFor(
      () => {
        const files = existsSync(mailDir) ? readdirSync(mailDir).filter((f) => f.endsWith(".eml")) : [];
        expect(files).toHaveLength(1);
        return readFileSync(join(mailDir, files[0]), "utf8");
      },
      { timeout: 10_000, interval: 20 },
    );
    const code = /^ {4}(\S+)\r?$/m.exec(eml)![1];
    const jwks = await (await fetch(`${second.url}/.well-known/jwks.json`)).json();
    await second.close();

    // The secrets are kept in DATA_DIR too: the code sent before the restart verifies after it,
    // and its proof token is signed with the key the JWKS published before.
    const third = await startApp(config, { log });
    try {
      const verify = () => postJson(third.url, "/codegate.v1.LoginService/VerifyLoginCode", { orgId, username: "embedded@example.com", code });
      const verified = await verify();
      expect(verified.status).toBe(200);
      const { payload } = await jwtVerify(verified.body.token, createLocalJWKSet(jwks));
      expect(payload.sub).toBe(identity.body.identity.id);
      expect(await (await fetch(`${third.url}/.well-known/jwks.json`)).json()).toEqual(jwks);
      expect((await verify()).status).toBe(401);
    } finally {
      await third.close();
    }
  });
});
