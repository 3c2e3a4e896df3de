import { afterAll, describe, expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startApp } from "../src/server/app.ts";
import { loadConfig } from "../src/config/config.ts";
import { createLogger } from "../src/lib/log.ts";
import { migrate, openOrm, pendingMigrations } from "../src/store/orm.ts";
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
    const orm = await openOrm({ databaseUrl: await freshDatabase(), dataDir: tempDir(), dbPoolSize: 2 });
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
    const env = { ...process.env, DATABASE_URL: await freshDatabase(), DATA_DIR: tempDir() };
    const node = process.execPath;
    const first = execFileSync(node, ["src/main.ts", "migrate"], { env, encoding: "utf8" });
    expect(first).toContain("applied: 20261123-initial");
    const second = execFileSync(node, ["src/main.ts", "migrate"], { env, encoding: "utf8" });
    expect(second).toContain("up to date");
  });
});

describe("the embedded default", () => {
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
    await second.close();
  });
});
