// Starts the real server on its own fresh database for a test file, and gives
// clients for it: grpc-js over h2c and plain HTTP/1.1 JSON (Connect protocol).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pg from "pg";
import { inject } from "vitest";
import { startApp, type App } from "../../src/app.ts";
import type { Clock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config/config.ts";
import { createLogger } from "../../src/log.ts";
import type { HealthOptions } from "../../src/transport/health.ts";

export const ADMIN_TOKEN = "test-admin-token-" + randomBytes(8).toString("hex");

/** Creates an empty database on the suite's PostgreSQL server; answers its URL. */
export async function freshDatabase(): Promise<string> {
  const base = new URL(inject("databaseUrl"));
  const name = `codegate_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client({ connectionString: base.toString() });
  await client.connect();
  await client.query(`create database ${name}`);
  await client.end();
  base.pathname = `/${name}`;
  return base.toString();
}

export interface TestServer {
  app: App;
  url: string;
  databaseUrl: string;
  dataDir: string;
  /** Every log line the server wrote, as parsed JSON. */
  logs: string[];
  close(): Promise<void>;
}

export async function startTestServer(env: Record<string, string> = {}, opts: { clock?: Clock; health?: HealthOptions } = {}): Promise<TestServer> {
  const databaseUrl = env.DATABASE_URL ?? (await freshDatabase());
  const dataDir = mkdtempSync(join(tmpdir(), "codegate-test-"));
  const config = loadConfig({
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: dataDir,
    DATABASE_URL: databaseUrl,
    ADMIN_TOKEN,
    LOG_LEVEL: "debug",
    // Most suites send many codes to one username; test/abuse.test.ts sets real limits.
    RATE_LIMIT_SEND_PER_USERNAME: "off",
    RATE_LIMIT_SEND_PER_ADDRESS: "off",
    ...env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      cb();
    },
  });
  const app = await startApp(config, { log: createLogger(config.logLevel, sink), clock: opts.clock, health: opts.health });
  return {
    app,
    url: app.url,
    databaseUrl,
    dataDir,
    logs,
    async close() {
      await app.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
