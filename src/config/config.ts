import { availableParallelism } from "node:os";
import { resolve } from "node:path";
import { oneIn, worstDailyGuessChance } from "../domain/guess-chance.ts";
import type { CodePolicy, Limit } from "../domain/policy.ts";
import type { Purpose } from "../domain/purpose.ts";
import { parseTrustedProxies } from "../lib/address.ts";
import { ConfigError, EnvReader } from "./env.ts";


export interface RateLimitConfig {
  sendPerUsername: Limit[];
  sendPerAddress: Limit[];
  verifyFailuresPerUsername: Limit[];
  verifyFailuresPerAddress: Limit[];
  adminAuthFailuresPerAddress: Limit[];
}

export interface Config {
  production: boolean;
  host: string;
  port: number;
  /** TLS on the listening port (PEM files), else cleartext (h2c and HTTP/1.1). */
  tls: { certFile: string; keyFile: string; ticketKeyRotationMs: number } | undefined;
  /** The operations listener (/metrics, /readyz): loopback unless told otherwise. */
  opsHost: string;
  opsPort: number;
  /** Where users reach this server; recovery links start with it. */
  publicUrl: string;
  dataDir: string;
  /** PostgreSQL; PGlite in dataDir when unset. */
  databaseUrl: string | undefined;
  /**
   * API worker processes of `serve`, sharing its port, beside one courier worker;
   * 1: one process serving and delivering. Several need DATABASE_URL (PGlite
   * serves one process).
   */
  workers: number;
  dbPoolSize: number;
  /** SMTP server; mails go to .eml files in dataDir/mail when unset. */
  smtpUrl: URL | undefined;
  mailFrom: string;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  maxRequestBytes: number;
  /** Upper bound of every RPC's run time. */
  rpcTimeoutMs: number;
  /** On SIGTERM, requests in flight get this long to finish. */
  shutdownGraceMs: number;
  /** A connection that has not sent a whole request head by then is closed. */
  headersTimeoutMs: number;
  /** Idle keep-alive connections and HTTP/2 sessions are closed after this. */
  idleTimeoutMs: number;
  /** Open connections of this process, at most. */
  maxConnections: number;
  /** Of which one client address (not a trusted proxy) holds at most this many. */
  maxConnectionsPerAddress: number;
  /** With TLS: handshakes one client address may begin in a second (0: no limit). */
  maxTlsHandshakesPerAddress: number;
  /** Streams open at once on one HTTP/2 connection. */
  http2MaxConcurrentStreams: number;
  /** Streaming RPCs (health Watch, reflection): their longest life, and how many may be open at once. */
  streams: { maxLifetimeMs: number; max: number; perAddress: number };
  /** Longest a database statement may run; bounds the work of an RPC past its deadline. */
  statementTimeoutMs: number;
  corsOrigins: string[];
  /** Raw secrets from the environment; see secrets.ts for the defaults. */
  secretsEnv: {
    adminToken: string | undefined;
    codeKeys: string | undefined;
    mailKeys: string | undefined;
    signingKey: string | undefined;
    verificationKeys: string | undefined;
  };
  codes: Record<Purpose, CodePolicy>;
  /** Bound codes live at once per identity and purpose, at most. */
  boundCodesPerIdentity: number;
  rateLimits: RateLimitConfig;
  /** The highest worst-case daily chance of guessing an account's code that a configuration may have. */
  maxGuessChance: number;
  /** Proxies whose X-Forwarded-For is believed for the client address. */
  trustedProxies: string[];
  token: { issuer: string; audience: string; ttlMs: number };
  retention: {
    /** Dead codes and sent mail metadata are kept this long, then deleted. */
    keepMs: number;
    intervalMs: number;
    /** Events of the trail are kept this long, then deleted. */
    eventsKeepMs: number;
  };
  tracing: {
    /** Where OTLP/HTTP spans go (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT); unset: tracing is off. */
    endpoint: URL | undefined;
    serviceName: string;
  };
  /** How often an open WatchEvents looks for new events. */
  eventsPollMs: number;
  courier: {
    enabled: boolean;
    batchSize: number;
    maxAttempts: number;
    backoffBaseMs: number;
    backoffMaxMs: number;
    pollMs: number;
    /** SMTP connections a courier keeps open at once, at most, each sending one mail at a time. */
    smtpConnections: number;
    /** The longest one mail may take on its connection, from connecting on; then the connection is cut. */
    sendTimeoutMs: number;
  };
}

const DIGITS = "0123456789";

/**
 * CORS_ORIGINS: `*`, or origins as browsers send them (scheme, host, port), e.g.
 * `https://app.example.com`. Anything else would never match an Origin header,
 * so it is an error rather than a silently refused browser.
 */
function corsOrigins(r: EnvReader): string[] {
  const entries = (r.raw("CORS_ORIGINS") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  return entries.map((entry) => {
    if (entry === "*") return entry;
    const u = URL.canParse(entry) ? new URL(entry) : undefined;
    if (!u || !["http:", "https:"].includes(u.protocol) || u.username || u.password || u.pathname !== "/" || u.search || u.hash) {
      r.problem(`CORS_ORIGINS: ${JSON.stringify(entry)} is not an origin like https://app.example.com, or *`);
      return entry;
    }
    return u.origin;
  });
}

/** TRUSTED_PROXIES: addresses or CIDR ranges, comma-separated. */
function trustedProxies(r: EnvReader): string[] {
  const entries = (r.raw("TRUSTED_PROXIES") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const { invalid } = parseTrustedProxies(entries);
  if (invalid.length) r.problem(`TRUSTED_PROXIES: ${invalid.map((e) => JSON.stringify(e)).join(", ")} is not an IP address or a CIDR range like 10.0.0.0/8`);
  return entries;
}

/** An admin token a person could guess or copy from an example: too short, or too few distinct characters. */
const weakToken = (token: string) => token.length < 32 || new Set(token).size < 10;

export interface LoadOptions {
  /**
   * The server or the courier is about to run: a production deployment must then
   * have its keys and PUBLIC_URL. Commands that only reach the database
   * (migrate, prune, admin-token) need neither.
   */
  serving?: boolean;
}

/** How long a set of TLS session ticket keys is used when TLS_TICKET_KEY_ROTATION does not say. */
export const DEFAULT_TICKET_KEY_ROTATION_MS = 3_600_000;

/**
 * Reads the configuration. Production is NODE_ENV=production, or any deployment
 * pointed at a real database (DATABASE_URL): keys and PUBLIC_URL are required,
 * nothing is generated and nothing secret is printed. Generated secrets and a
 * printed admin token belong to the embedded default only.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env, opts: LoadOptions = { serving: true }): Config {
  const r = new EnvReader(env);
  const nodeEnvProduction = r.raw("NODE_ENV") === "production";
  const databaseUrl = r.url("DATABASE_URL", ["postgres:", "postgresql:"]) ? r.raw("DATABASE_URL") : undefined;
  const production = nodeEnvProduction || databaseUrl !== undefined;
  const port = r.int("PORT", 8080, 0, 65535);
  const host = r.string("HOST", "0.0.0.0");
  const tlsCertFile = r.raw("TLS_CERT_FILE") || undefined;
  const tlsKeyFile = r.raw("TLS_KEY_FILE") || undefined;
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) r.problem("TLS_CERT_FILE, TLS_KEY_FILE: expected both (PEM files of the certificate chain and its private key), or neither");
  const ticketKeyRotationMs = r.duration("TLS_TICKET_KEY_ROTATION", DEFAULT_TICKET_KEY_ROTATION_MS, 1000, 24 * 3_600_000);
  const tls = tlsCertFile && tlsKeyFile ? { certFile: resolve(tlsCertFile), keyFile: resolve(tlsKeyFile), ticketKeyRotationMs } : undefined;
  const publicUrl = r.url("PUBLIC_URL", ["http:", "https:"])?.toString().replace(/\/$/, "") ?? `${tls ? "https" : "http"}://localhost:${port}`;
  const rpcTimeoutMs = r.duration("RPC_TIMEOUT", 10_000, 100, 300_000);

  const codePolicy = (purpose: Purpose, lifespanMs: number): CodePolicy => {
    const prefix = `CODE_${purpose.toUpperCase()}_`;
    const alphabet = r.string(`${prefix}ALPHABET`, DIGITS);
    if (new Set(alphabet).size !== alphabet.length || alphabet.length < 2 || alphabet.length > 64) {
      r.problem(`${prefix}ALPHABET: expected 2 to 64 distinct characters`);
    }
    return {
      length: r.int(`${prefix}LENGTH`, 6, 4, 32),
      alphabet,
      lifespanMs: r.duration(`${prefix}LIFESPAN`, lifespanMs, 30_000, 30 * 24 * 3_600_000),
      maxAttempts: r.int(`${prefix}MAX_ATTEMPTS`, 5, 1, 100),
    };
  };

  const config: Config = {
    production,
    host,
    port,
    tls,
    opsHost: r.string("OPS_HOST", "127.0.0.1"),
    opsPort: r.int("OPS_PORT", 9090, 0, 65535),
    publicUrl,
    dataDir: resolve(r.string("DATA_DIR", "./data")),
    databaseUrl,
    workers: r.int("WORKERS", databaseUrl ? availableParallelism() : 1, 1, 256),
    dbPoolSize: r.int("DATABASE_POOL_SIZE", 10, 1, 200),
    smtpUrl: r.url("SMTP_URL", ["smtp:", "smtps:"]),
    mailFrom: r.address("MAIL_FROM", "no-reply@codegate.localhost"),
    logLevel: r.oneOf("LOG_LEVEL", "info", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const),
    maxRequestBytes: r.int("MAX_REQUEST_BYTES", 64 * 1024, 1024, 16 * 1024 * 1024),
    rpcTimeoutMs,
    headersTimeoutMs: r.duration("HEADERS_TIMEOUT", 10_000, 100, 120_000),
    idleTimeoutMs: r.duration("IDLE_TIMEOUT", 60_000, 1000, 3_600_000),
    maxConnections: r.int("MAX_CONNECTIONS", 4096, 1, 1_000_000),
    maxConnectionsPerAddress: r.int("MAX_CONNECTIONS_PER_ADDRESS", 256, 1, 1_000_000),
    maxTlsHandshakesPerAddress: r.int("MAX_TLS_HANDSHAKES_PER_ADDRESS", 100, 0, 1_000_000),
    http2MaxConcurrentStreams: r.int("HTTP2_MAX_CONCURRENT_STREAMS", 100, 1, 10_000),
    streams: {
      maxLifetimeMs: r.duration("STREAM_MAX_LIFETIME", 30 * 60_000, 1000, 24 * 3_600_000),
      max: r.int("MAX_STREAMS", 1000, 1, 1_000_000),
      perAddress: r.int("MAX_STREAMS_PER_ADDRESS", 50, 1, 1_000_000),
    },
    shutdownGraceMs: r.duration("SHUTDOWN_GRACE", 10_000, 0, 300_000),
    statementTimeoutMs: r.duration("DATABASE_STATEMENT_TIMEOUT", rpcTimeoutMs, 100, 3_600_000),
    corsOrigins: corsOrigins(r),
    secretsEnv: {
      adminToken: r.raw("ADMIN_TOKEN"),
      codeKeys: r.raw("CODE_HMAC_KEYS"),
      mailKeys: r.raw("MAIL_ENCRYPTION_KEYS"),
      signingKey: r.raw("TOKEN_SIGNING_KEY"),
      verificationKeys: r.raw("TOKEN_VERIFICATION_KEYS"),
    },
    codes: {
      login: codePolicy("login", 10 * 60_000),
      registration: codePolicy("registration", 24 * 3_600_000),
      recovery: codePolicy("recovery", 3_600_000),
    },
    boundCodesPerIdentity: r.int("BOUND_CODES_PER_IDENTITY", 3, 1, 20),
    rateLimits: {
      sendPerUsername: r.limits("RATE_LIMIT_SEND_PER_USERNAME", "1/30s,5/1h,10/24h"),
      sendPerAddress: r.limits("RATE_LIMIT_SEND_PER_ADDRESS", "30/1m,500/1h"),
      verifyFailuresPerUsername: r.limits("RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME", "10/24h"),
      verifyFailuresPerAddress: r.limits("RATE_LIMIT_VERIFY_FAILURES_PER_ADDRESS", "20/1m,200/1h"),
      adminAuthFailuresPerAddress: r.limits("RATE_LIMIT_ADMIN_AUTH_FAILURES_PER_ADDRESS", "10/1m,100/1h"),
    },
    maxGuessChance: r.chance("MAX_GUESS_CHANCE", 1 / 10_000),
    trustedProxies: trustedProxies(r),
    token: {
      issuer: r.string("TOKEN_ISSUER", publicUrl),
      audience: r.string("TOKEN_AUDIENCE", "codegate"),
      ttlMs: r.duration("TOKEN_TTL", 5 * 60_000, 10_000, 3_600_000),
    },
    retention: {
      keepMs: r.duration("RETENTION_PERIOD", 7 * 24 * 3_600_000, 60_000, 3650 * 24 * 3_600_000),
      intervalMs: r.duration("RETENTION_INTERVAL", 10 * 60_000, 1000, 24 * 3_600_000),
      eventsKeepMs: r.duration("EVENT_RETENTION_PERIOD", 30 * 24 * 3_600_000, 60_000, 3650 * 24 * 3_600_000),
    },
    tracing: {
      // The exporter reads these itself (with OTEL_EXPORTER_OTLP_HEADERS and the rest); here they are checked and turn tracing on.
      endpoint: r.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ["http:", "https:"]) ?? r.url("OTEL_EXPORTER_OTLP_ENDPOINT", ["http:", "https:"]),
      serviceName: r.string("OTEL_SERVICE_NAME", "codegate"),
    },
    eventsPollMs: r.duration("EVENTS_POLL_INTERVAL", 1000, 10, 60_000),
    courier: {
      enabled: r.bool("COURIER_ENABLED", true),
      batchSize: r.int("COURIER_BATCH_SIZE", 50, 1, 1000),
      maxAttempts: r.int("COURIER_MAX_ATTEMPTS", 40, 1, 1000),
      backoffBaseMs: r.duration("COURIER_BACKOFF_BASE", 1000, 10, 3_600_000),
      backoffMaxMs: r.duration("COURIER_BACKOFF_MAX", 30_000, 10, 24 * 3_600_000),
      pollMs: r.duration("COURIER_POLL_INTERVAL", 1000, 10, 60_000),
      smtpConnections: r.int("COURIER_SMTP_CONNECTIONS", 8, 1, 100),
      sendTimeoutMs: r.duration("COURIER_SEND_TIMEOUT", 60_000, 1000, 600_000),
    },
  };
  const guess = worstDailyGuessChance({ policies: config.codes, ...config.rateLimits });
  if (guess.chance > config.maxGuessChance) {
    r.problem(
      `the worst-case chance of guessing an account's code within a day is ${oneIn(guess.chance)}, above MAX_GUESS_CHANCE (${oneIn(config.maxGuessChance)}): ` +
        `${guess.sendsPerDay} codes per purpose and ${guess.failuresPerDay} wrong guesses per username a day at most ` +
        `(RATE_LIMIT_SEND_PER_USERNAME, RATE_LIMIT_VERIFY_FAILURES_PER_USERNAME); lengthen the codes (CODE_<PURPOSE>_LENGTH), widen their alphabets, or tighten those limits`,
    );
  }
  if (config.workers > 1 && !config.databaseUrl) {
    r.problem(`WORKERS=${config.workers}: the embedded database (PGlite) serves one process; set DATABASE_URL to run several workers`);
  }
  const adminToken = config.secretsEnv.adminToken;
  if (adminToken !== undefined && weakToken(adminToken)) {
    r.problem("ADMIN_TOKEN: expected a strong random token of at least 32 characters (e.g. `openssl rand -base64 32`); a guessable one is refused");
  }
  if (nodeEnvProduction) {
    for (const [name, value] of [
      ["DATABASE_URL", config.databaseUrl],
      ["SMTP_URL", config.smtpUrl],
    ] as const) {
      if (value === undefined) r.problem(`${name}: required when NODE_ENV=production`);
    }
  }
  if (production && opts.serving) {
    const why = nodeEnvProduction ? "when NODE_ENV=production" : "when DATABASE_URL is set (a real deployment: nothing is generated)";
    for (const [name, value] of [
      ["CODE_HMAC_KEYS", config.secretsEnv.codeKeys],
      ["MAIL_ENCRYPTION_KEYS", config.secretsEnv.mailKeys],
      ["TOKEN_SIGNING_KEY", config.secretsEnv.signingKey],
      ["PUBLIC_URL", r.raw("PUBLIC_URL")],
    ] as const) {
      if (value === undefined) r.problem(`${name}: required ${why}`);
    }
  }
  if (r.problems.length) throw new ConfigError(r.problems);
  return config;
}
