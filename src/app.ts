// Wires one server process: configuration, secrets, database, services, and the
// single listening address.
import type { AddressInfo } from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { AdminService } from "../gen/codegate/v1/admin_pb.ts";
import { LoginService } from "../gen/codegate/v1/login_pb.ts";
import { RecoveryService } from "../gen/codegate/v1/recovery_pb.ts";
import { RegistrationService } from "../gen/codegate/v1/registration_pb.ts";
import { adminService } from "./admin/service.ts";
import { CodeEngine } from "./codes/engine.ts";
import { oneIn, worstDailyGuessChance } from "./codes/guess-chance.ts";
import type { Courier } from "./courier/courier.ts";
import { startRetention } from "./storage/retention.ts";
import { createCourier } from "./courier/create.ts";
import type { FlowDeps } from "./flows/deps.ts";
import { loginService } from "./flows/login.ts";
import { FlowLimits } from "./flows/limits.ts";
import { RateLimiter } from "./abuse/rate-limiter.ts";
import { recoveryService } from "./flows/recovery.ts";
import { registrationService } from "./flows/registration.ts";
import { OrgDirectory } from "./flows/organizations.ts";
import { sqlOf, type Sql } from "./storage/sql.ts";
import { ProofTokens } from "./tokens/proof.ts";
import { AdminTokenVerifier, countAdminTokens, createAdminToken } from "./admin/tokens.ts";
import { systemClock, type Clock } from "./clock.ts";
import type { Config } from "./config/config.ts";
import { loadSecrets } from "./config/secrets.ts";
import type { AppContext } from "./context.ts";
import { createLogger, type Logger } from "./log.ts";
import { createMetrics, databaseSources } from "./metrics.ts";
import { openMigrated } from "./storage/orm.ts";
import { createListener } from "./transport/listener.ts";
import { httpRouter, sendJson } from "./transport/http-routes.ts";
import { recoveryPageRoutes } from "./transport/recovery-page.ts";
import { createRpcHandler, rpcContextValues } from "./transport/rpc.ts";
import type { HealthOptions, HealthState } from "./transport/health.ts";
import { operations, startOpsListener } from "./transport/ops.ts";
import { restHandler } from "./transport/rest.ts";
import { withCors } from "./transport/cors.ts";
import type { CallBounds } from "./transport/call.ts";

/** How long an answer gets to leave once its call's bound has passed. */
const ANSWER_GRACE_MS = 5_000;

export interface App {
  ctx: AppContext;
  flows: FlowDeps;
  /** Present when this process runs the courier. */
  courier: Courier | undefined;
  /** http://host:port of the listening address. */
  url: string;
  port: number;
  /** http://host:port of the operations listener (/metrics, /readyz). */
  opsUrl: string;
  /** Set when this start created the first admin token (shown once). */
  firstAdminToken: string | undefined;
  /** gRPC health and /readyz; NOT_SERVING from the start of close(). */
  health: HealthState;
  close(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  clock?: Clock;
  health?: HealthOptions;
  /** Wraps the statements of the hot paths, e.g. to trace or record them. */
  instrumentSql?: (sql: Sql) => Sql;
}

export async function startApp(config: Config, opts: StartOptions = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.logLevel);
  const secrets = loadSecrets(config, (msg) => log.warn(msg));
  const { orm, applied } = await openMigrated(config);
  if (applied.length) log.info({ migrations: applied }, "applied migrations");

  const clock = opts.clock ?? systemClock;
  const metrics = createMetrics(databaseSources(orm, clock));
  const ctx: AppContext = { config, secrets, orm, log, clock, metrics, em: () => orm.em.fork() };
  const ops = operations(ctx, opts.health);

  // The embedded default gets a first admin token, printed once, so that it can
  // be tried right away. Production servers create theirs explicitly.
  let firstAdminToken: string | undefined;
  if (!config.production && !config.secretsEnv.adminToken && (await countAdminTokens(ctx.em())) === 0) {
    firstAdminToken = (await createAdminToken(ctx.em(), "first admin token", ctx.clock.now())).token;
  }

  const sql = (opts.instrumentSql ?? ((s: Sql) => s))(await sqlOf(orm));
  const mail = config.courier.enabled ? createCourier({ config, secrets, sql, clock, log, events: metrics.courier }) : undefined;
  const courier = mail?.courier;
  const codes = new CodeEngine({
    sql,
    config,
    secrets,
    clock: ctx.clock,
    events: metrics.codes,
    // After the answer has gone out: a known user's send must not answer later.
    onQueued: () => setImmediate(() => courier?.wake()),
  });
  const tokens = await ProofTokens.create(secrets.signingKeyPem, config.token, secrets.verificationKeyPems);
  const limits = new FlowLimits(new RateLimiter(sql, ctx.clock), config);
  const flows: FlowDeps = { app: ctx, sql, orgs: new OrgDirectory(sql), codes, tokens, limits };

  const shutdown = new AbortController();
  const routes = (router: ConnectRouter) => {
    router.service(AdminService, adminService(flows));
    router.service(LoginService, loginService(flows));
    router.service(RegistrationService, registrationService(flows));
    router.service(RecoveryService, recoveryService(flows));
  };
  // Every call ends within its bound; its answer then has the grace to leave.
  const bounds: CallBounds = { unaryMs: config.rpcTimeoutMs, streamMs: config.streams.maxLifetimeMs, graceMs: ANSWER_GRACE_MS };
  const rpc = createRpcHandler(ctx, {
    routes: ops.routes(routes),
    adminTokens: new AdminTokenVerifier(ctx.em, config.secretsEnv.adminToken),
    adminAuthFailed: (call) => limits.adminAuthFailed(call),
    shutdownSignal: shutdown.signal,
    bounds,
    maxStreams: config.streams.max,
    fallback: httpRouter(
      {
        "GET /healthz": (_req, res) => sendJson(res, 200, { status: "ok" }),
        "GET /.well-known/jwks.json": (_req, res) => sendJson(res, 200, tokens.jwks(), { "cache-control": "public, max-age=300" }),
        ...recoveryPageRoutes(config),
      },
      log,
    ),
  });
  // The REST routes run the router's own handlers.
  const rest = restHandler(rpc.handlers, { maxRequestBytes: config.maxRequestBytes, contextValues: rpcContextValues, bounds, log }, rpc.handle);
  const listener = createListener(withCors(config.corsOrigins, rest), {
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: Math.max(config.headersTimeoutMs, config.rpcTimeoutMs + ANSWER_GRACE_MS),
    idleTimeoutMs: config.idleTimeoutMs,
    maxConnections: config.maxConnections,
    maxConcurrentStreams: config.http2MaxConcurrentStreams,
    log,
  });
  await new Promise<void>((resolve, reject) => {
    listener.server.once("error", reject);
    listener.server.listen(config.port, config.host, () => resolve());
  });
  const port = (listener.server.address() as AddressInfo).port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const opsListener = await startOpsListener(ops.httpRoutes, { host: config.opsHost, port: config.opsPort, headersTimeoutMs: config.headersTimeoutMs, log });
  log.info(
    { port, opsPort: opsListener.port, database: config.databaseUrl ? "postgresql" : "pglite", mail: mail?.destination ?? "courier off" },
    "listening",
  );
  const guess = worstDailyGuessChance({ policies: config.codes, ...config.rateLimits });
  log.info(
    { guessChance: oneIn(guess.chance), maxGuessChance: oneIn(config.maxGuessChance), codesPerDay: guess.sendsPerDay, wrongGuessesPerDay: guess.failuresPerDay },
    `worst-case chance of guessing an account's code within a day: ${oneIn(guess.chance)} (MAX_GUESS_CHANCE ${oneIn(config.maxGuessChance)})`,
  );
  courier?.start();
  const retention = startRetention({ sql, clock, log, keepMs: config.retention.keepMs, intervalMs: config.retention.intervalMs });

  return {
    ctx,
    url: `http://${host}:${port}`,
    port,
    opsUrl: opsListener.url,
    firstAdminToken,
    flows,
    courier,
    health: ops.health,
    async close() {
      // Load balancers see NOT_SERVING; new connections are refused; requests in
      // flight finish within the grace period; only then is anything cancelled.
      await ops.health.beginShutdown();
      rpc.endStreams();
      await listener.close(config.shutdownGraceMs);
      await opsListener.close();
      shutdown.abort();
      // The courier finishes (or gives back) the batch in hand.
      await mail?.stop();
      await retention.stop();
      await orm.close();
    },
  };
}
