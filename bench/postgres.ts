// A throwaway PostgreSQL server for a benchmark: the tests' embedded PostgreSQL
// (test/support/embedded-postgres.ts), which runs wherever the checkout lies,
// as root or not. `dir` is kept for the callers' temporary files; the server's
// own directory is removed by `db.stop()`.
import { appendFileSync } from "node:fs";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../test/support/embedded-postgres.ts";
export { freePort } from "../test/support/net.ts";

export async function startPostgres(_dir: string, flags: string[] = []): Promise<{ db: EmbeddedPostgres; url: string; dataDir: string }> {
  // BENCH_PG_LOG: a file the server's log is written to (dropped otherwise).
  const logFile = process.env.BENCH_PG_LOG;
  const db = await startEmbeddedPostgres({ flags, onLog: logFile ? (line) => appendFileSync(logFile, line + "\n") : undefined });
  return { db, url: db.url, dataDir: db.dataDir };
}
