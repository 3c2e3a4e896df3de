// Starts the real server on its own fresh database for a test file, and gives
// clients for it: grpc-js over h2c and plain HTTP/1.1 JSON (Connect protocol).
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import pg from "pg";
import { inject } from "vitest";
import { startApp, type App, type StartOptions } from "../../src/server/app.ts";
import { loadConfig } from "../../src/config/config.ts";
import { createLogger } from "../../src/lib/log.ts";

export const ADMIN_TOKEN = "test-admin-token-" + randomBytes(8).toString("hex");

/**
 * What a deployment on a real database must configure (nothing is generated
 * there), made once per test file: servers of one file share their keys, as
 * the instances of one deployment do.
 */
export const DEPLOYMENT_ENV: Readonly<Record<string, string>> = {
  CODE_HMAC_KEYS: `t1:${randomBytes(32).toString("base64")}`,
  MAIL_ENCRYPTION_KEYS: `t1:${randomBytes(32).toString("base64")}`,
  TOKEN_SIGNING_KEY: Buffer.from(generateKeyPairSync("ed25519").privateKey.export({ type: "pkcs8", format: "pem" })).toString("base64"),
  PUBLIC_URL: "http://codegate.test",
};

/**
 * Limits most suites turn off: they send many codes to one username, verify
 * wrong codes on purpose, and call admin RPCs without a token, all from one
 * address. Without limits a code is not guessing-safe, hence MAX_GUESS_CHANCE 1;
 * test/abuse*.test.ts set real limits.
 */
export const TEST_LIMITS: Readonly<Record<string, string>> = {
  RATE_LIMIT_SEND_PER_USERNAME: "off",
  RATE_LIMIT_SEND_PER_ADDRESS: "off",
  RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS: "off",
  RATE_LIMIT_ADMIN_AUTH_FAILURES_PER_ADDRESS: "off",
  MAX_GUESS_CHANCE: "1",
};

/**
 * A new database on the suite's PostgreSQL server: a copy of the migrated template,
 * or with `empty`, one without any table (for tests of the migrations).
 */
export async function freshDatabase(opts: { empty?: boolean } = {}): Promise<string> {
  const base = new URL(inject("databaseUrl"));
  const name = `codegate_${randomBytes(6).toString("hex")}`;
  const client = new pg.Client({ connectionString: base.toString() });
  await client.connect();
  try {
    await client.query(opts.empty ? `create database ${name}` : `create database ${name} template ${inject("templateDatabase")}`);
  } finally {
    await client.end();
  }
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

export async function startTestServer(
  env: Record<string, string> = {},
  opts: Pick<StartOptions, "clock" | "health" | "instrumentSql" | "spanExporter" | "sendTimes" | "failureTimes"> = {},
): Promise<TestServer> {
  const databaseUrl = env.DATABASE_URL ?? (await freshDatabase());
  const dataDir = mkdtempSync(join(tmpdir(), "codegate-test-"));
  const config = loadConfig({
    HOST: "127.0.0.1",
    PORT: "0",
    OPS_PORT: "0",
    DATA_DIR: dataDir,
    DATABASE_URL: databaseUrl,
    ADMIN_TOKEN,
    LOG_LEVEL: "debug",
    ...DEPLOYMENT_ENV,
    ...TEST_LIMITS,
    ...env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      cb();
    },
  });
  const app = await startApp(config, { log: createLogger(config.logLevel, sink), clock: opts.clock, health: opts.health, instrumentSql: opts.instrumentSql, spanExporter: opts.spanExporter, sendTimes: opts.sendTimes, failureTimes: opts.failureTimes });
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
