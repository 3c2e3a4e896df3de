// Wires one server process: configuration, secrets, database, services, and the
// single listening address.
import type { AddressInfo } from "node:net";
import type { Config } from "../config/config.ts";
import { loadSecrets, type Secrets } from "../config/secrets.ts";
import { systemClock, type Clock } from "../domain/clock.ts";
import { oneIn, worstDailyGuessChance } from "../domain/guess-chance.ts";
import type { Channel } from "../domain/outbox.ts";
import { parseTrustedProxies } from "../lib/address.ts";
import { createLogger, type Logger } from "../lib/log.ts";
import { AdminTokenVerifier, countAdminTokens, createAdminToken } from "../rules/admin-tokens.ts";
import { CodeEngine } from "../rules/codes/engine.ts";
import { MailQueuedAnnouncer } from "../rules/courier/announcer.ts";
import type { Courier } from "../rules/courier/courier.ts";
import { createCourier, wakeOnQueuedMail } from "../rules/courier/create.ts";
import { DeliveryDesk } from "../rules/delivery/delivery.ts";
import { DueLater } from "../rules/delivery/due-later.ts";
import { DeliveryWaits, hearQueuedMessages } from "../rules/delivery/waits.ts";
import type { LimitEvents } from "../rules/events.ts";
import { FlowLimits } from "../rules/limits/limits.ts";
import { RateLimiter } from "../rules/limits/rate-limiter.ts";
import { MailTemplates } from "../rules/mail/org-templates.ts";
import { followOrgChanges, OrgChanges } from "../rules/org-changes.ts";
import { OrgDirectory } from "../rules/organizations.ts";
import { startRetention } from "../rules/retention.ts";
import { ProofTokens } from "../rules/tokens.ts";
import { apiServices, type ServiceDeps } from "../services/index.ts";
import { openMigrated, openOrm, type Orm } from "../store/orm.ts";
import { pendingMigrations, ping } from "../store/probes.ts";
import { sqlOf, type Sql } from "../store/sql.ts";
import type { CallBounds } from "./call.ts";
import { withCors } from "./cors.ts";
import { httpRouter, sendJson } from "./http-routes.ts";
import { createListener } from "./listener.ts";
import type { HealthOptions, HealthState } from "./ops/health.ts";
import { createMetrics, databaseSources, type Metrics } from "./ops/metrics.ts";
import { operations, startOpsListener } from "./ops/ops.ts";
import { recoveryPageRoutes } from "./recovery-page.ts";
import { verifyPageRoutes } from "./verify-page.ts";
import { openApiRoutes } from "./openapi.ts";
import { restHandler } from "./rest/handler.ts";
import { createRpcAdapter } from "./rpc-adapter.ts";
import { requestIdKey } from "../services/context-keys.ts";
import { rpcPipeline } from "./rpc.ts";
import type { TicketKeys } from "./ticket-keys.ts";
import { serverTls } from "./tls.ts";
import { startTracing } from "./tracing.ts";
import { AnswerTimes } from "../rules/answer-times.ts";
import { tracedSql } from "../store/traced-sql.ts";
import type { SpanExporter } from "@opentelemetry/sdk-trace";

/** How long an answer gets to leave once its call's bound has passed. */
const ANSWER_GRACE_MS = 5_000;

/**
 * Unknown fields are refused; and a JSON body that is not UTF-8 is refused too,
 * rather than read with replacement characters (a username with U+FFFD in it).
 * connect-es hands these options to its JSON serialization, which takes a
 * `textDecoder` (JsonSerializationOptions) though the handler options' type does
 * not name it (test/hostile-requests.test.ts pins it, over both Connect paths).
 */
const JSON_OPTIONS: { ignoreUnknownFields: boolean; textDecoder: TextDecoder } = { ignoreUnknownFields: false, textDecoder: new TextDecoder("utf-8", { fatal: true }) };

export interface App {
  config: Config;
  secrets: Secrets;
  clock: Clock;
  metrics: Metrics;
  orm: Orm;
  /** The statements of the hot paths (as StartOptions.instrumentSql wrapped them). */
  sql: Sql;
  codes: CodeEngine;
  orgs: OrgDirectory;
  /** Changes of organizations and their templates, made here or heard from the database. */
  orgChanges: OrgChanges;
  /** Present when this process runs the courier. */
  courier: Courier | undefined;
  /** The delivery API's claims waiting for messages (ClaimRequest.wait). */
  deliveryWaits: DeliveryWaits;
  /** Tells other processes of queued messages (on PostgreSQL). */
  announcer: MailQueuedAnnouncer | undefined;
  /** http://host:port of the listening address. */
  url: string;
  port: number;
  /** http://host:port of the operations listener (/metrics, /readyz); undefined in a worker of `serve`, whose primary serves it. */
  opsUrl: string | undefined;
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
  /** Turns tracing on with this exporter (a test's), whatever the configuration says. */
  spanExporter?: SpanExporter;
  /**
   * An API worker of `serve` (server/cluster.ts): the primary has run the
   * migrations and serves the operations listener.
   */
  worker?: boolean;
  /** The TLS session ticket keys `serve`'s primary draws and rotates for its API workers (server/cluster.ts); else drawn and rotated here. */
  tlsTicketKeys?: TicketKeys;
  /** Run the retention job (default); `serve`'s API workers leave it to the courier worker. */
  retention?: boolean;
  /** The sends' and the failed verifications' answer times (a test's, to watch them). */
  sendTimes?: AnswerTimes;
  failureTimes?: AnswerTimes;
}

/**
 * Starts the server. A start that fails (the port taken, the database out of reach) closes
 * what it had opened before it throws: the database's connections, its listening ones,
 * timers and listeners; a caller in the same process is left with nothing running.
 */
export async function startApp(config: Config, opts: StartOptions = {}): Promise<App> {
  const opened: (() => unknown)[] = [];
  try {
    return await assembleApp(config, opts, (close) => void opened.push(close));
  } catch (err) {
    for (const close of opened.reverse()) await Promise.resolve().then(close).catch(() => {});
    throw err;
  }
}

/** startApp's work; `opened` is told how to close each thing as soon as it is open. */
async function assembleApp(config: Config, opts: StartOptions, opened: (close: () => unknown) => void): Promise<App> {
  const log = opts.log ?? createLogger(config.logLevel);
  const secrets = loadSecrets(config, (msg) => log.warn(msg));
  // Before anything is opened: a certificate that does not load stops the start here.
  const tls = config.tls ? serverTls(config.tls, log, { ticketKeys: opts.tlsTicketKeys }) : undefined;
  if (tls) opened(() => tls.close());
  const { orm, applied } = opts.worker ? { orm: await openOrm(config), applied: [] } : await openMigrated(config);
  opened(() => orm.close());
  if (applied.length) log.info({ migrations: applied }, "applied migrations");

  const clock = opts.clock ?? systemClock;
  // Before the pipeline and the statements are made: off, neither is traced at all.
  const tracing = startTracing(config, opts.worker ? "api" : "serve", opts.spanExporter);
  if (tracing) opened(() => tracing.stop());
  const plainSql = await sqlOf(orm);
  const instrumented = (opts.instrumentSql ?? ((s: Sql) => s))(plainSql);
  const sql = tracing ? tracedSql(instrumented) : instrumented;
  // Other processes on the database are told of queued messages: the couriers when there is none here,
  // and the delivery API's waiting claims (PGlite serves one process: nothing to tell).
  // Over the plain Sql: the announcement is no statement of a call but runs after its answer, one for
  // the messages of many calls, as the delivery an inline courier is woken for.
  const announcer = config.databaseUrl ? new MailQueuedAnnouncer({ sql: plainSql, log }) : undefined;
  if (announcer) opened(() => announcer.close());
  // Waiting claims here hear of messages other servers queued once the first waits (on PGlite, nothing listens),
  // and other servers are told of the messages no claim waiting here took.
  const deliveryWaits = new DeliveryWaits(hearQueuedMessages(orm, log, announcer?.tag), announcer && ((channels) => announcer.queued(channels)));
  opened(() => deliveryWaits.stop());
  const metrics = createMetrics({ ...databaseSources(sql, orm, clock), waitingClaims: () => deliveryWaits.waiting });
  const ops = operations({ database: () => ping(sql), pendingMigrations: () => pendingMigrations(orm) }, metrics, opts.health);

  // The embedded default gets a first admin token, printed once, so that it can
  // be tried right away. Production servers create theirs explicitly.
  let firstAdminToken: string | undefined;
  if (!config.production && !config.secretsEnv.adminToken && (await countAdminTokens(orm)) === 0) {
    firstAdminToken = (await createAdminToken(orm, "first admin token", clock.now())).token;
  }

  const mail = config.courier.enabled ? createCourier({ config, secrets, sql, clock, log, events: metrics.courier }) : undefined;
  if (mail) opened(() => mail.stop(0));
  const courier = mail?.courier;
  // Messages on these channels were queued (or given back): who claims them here is told directly, and
  // elsewhere through the announcer (the delivery API's, when no claim here took them). After the answer
  // has gone out: a known user's send must not answer later.
  const queuedOn = (channels: readonly Channel[]) =>
    setImmediate(() => {
      if (channels.includes("smtp")) {
        if (courier) courier.wake();
        else announcer?.queued(["smtp"]);
      }
      const api = channels.filter((c) => c !== "smtp");
      if (api.length) deliveryWaits.wake(api);
    });
  // Counted, and said with the database's reason (its message only: a detail could name a limit's key, a username).
  const limitEvents: LimitEvents = {
    takeBackFailed(err) {
      metrics.limits.takeBackFailed(err);
      log.warn({ err: err.message }, "a refused request's rate-limit hits could not be taken back: they count until their windows end");
    },
  };
  const codes = new CodeEngine({
    sql,
    config,
    secrets,
    clock,
    events: { ...metrics.codes, ...limitEvents },
    onQueued: queuedOn,
    failureTimes: opts.failureTimes ?? new AnswerTimes(),
  });
  const tokens = await ProofTokens.create(secrets.signingKeyPem, config.token, secrets.verificationKeyPems);
  const limits = new FlowLimits(new RateLimiter(sql, clock, limitEvents), config);
  // Organizations and their templates are cached; an admin change anywhere is heard here (NOTIFY) and forgets them.
  const orgChanges = new OrgChanges();
  const orgFeed = await followOrgChanges(orm, orgChanges, log);
  opened(() => orgFeed.close());
  // A courier here also hears of the mail that servers without one queue on the same database (on PGlite, nothing listens).
  const queuedFeed = courier ? await wakeOnQueuedMail(orm, courier, log) : undefined;
  if (queuedFeed) opened(() => queuedFeed.close());
  const orgs = new OrgDirectory(sql, orgChanges);
  const mailTemplates = new MailTemplates({ sql, publicUrl: config.publicUrl, changes: orgChanges });
  // A retried message is rung for at its time, as one queued then would be.
  const dueLater = new DueLater(queuedOn, clock);
  opened(() => dueLater.stop());
  const delivery = new DeliveryDesk({ sql, config: config.courier, secrets, clock, log: log.child({ component: "delivery" }), events: metrics.courier, waits: deliveryWaits, released: queuedOn, dueLater });
  const deps: ServiceDeps = { config, orm, sql, clock, orgs, codes, tokens, limits, mail: mailTemplates, sendTimes: opts.sendTimes ?? new AnswerTimes(), changes: orgChanges, delivery };

  const shutdown = new AbortController();
  const api = apiServices(deps);
  const trustedProxies = parseTrustedProxies(config.trustedProxies).proxies;
  const pipeline = rpcPipeline({
    log,
    metrics,
    trustedProxies,
    adminTokens: new AdminTokenVerifier(orm, config.secretsEnv.adminToken),
    adminAuthFailed: (address) => limits.adminAuthFailed(address),
    maxStreams: config.streams.max,
    maxStreamsPerAddress: config.streams.perAddress,
  });
  // Every call ends within its bound; its answer then has the grace to leave.
  const bounds: CallBounds = { unaryMs: config.rpcTimeoutMs, streamMs: config.streams.maxLifetimeMs, graceMs: ANSWER_GRACE_MS };
  const rpc = createRpcAdapter({
    services: [...api, ...ops.services(api.map((s) => s.service))],
    requestGate: pipeline.requestGate,
    interceptors: pipeline.interceptors,
    contextValues: pipeline.contextValues,
    requestIdOf: (values) => values.get(requestIdKey),
    bounds,
    log,
    readMaxBytes: config.maxRequestBytes,
    writeMaxBytes: 4 * 1024 * 1024,
    shutdownSignal: shutdown.signal,
    jsonOptions: JSON_OPTIONS,
    fallback: httpRouter(
      {
        "GET /healthz": (_req, res) => sendJson(res, 200, { status: "ok" }),
        "GET /.well-known/jwks.json": (_req, res) => sendJson(res, 200, tokens.jwks(), { "cache-control": "public, max-age=300" }),
        ...recoveryPageRoutes(config),
        ...verifyPageRoutes(),
        ...openApiRoutes(config.publicUrl),
      },
      log,
    ),
  });
  const rest = restHandler(api, pipeline, { maxRequestBytes: config.maxRequestBytes, shutdownSignal: shutdown.signal, bounds, log }, rpc);
  const listener = createListener(withCors(config.corsOrigins, rest), {
    headersTimeoutMs: config.headersTimeoutMs,
    requestTimeoutMs: Math.max(config.headersTimeoutMs, config.rpcTimeoutMs + ANSWER_GRACE_MS),
    idleTimeoutMs: config.idleTimeoutMs,
    maxConnections: config.maxConnections,
    maxConnectionsPerAddress: config.maxConnectionsPerAddress,
    maxTlsHandshakesPerAddress: config.maxTlsHandshakesPerAddress,
    trustedProxies,
    maxConcurrentStreams: config.http2MaxConcurrentStreams,
    log,
    refused: metrics.connectionRefused,
    tls,
  });
  opened(() => listener.close(0));
  await new Promise<void>((resolve, reject) => {
    listener.server.once("error", reject);
    listener.server.listen(config.port, config.host, () => resolve());
  });
  const port = (listener.server.address() as AddressInfo).port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const opsListener = opts.worker
    ? undefined
    : await startOpsListener(ops.httpRoutes, { host: config.opsHost, port: config.opsPort, headersTimeoutMs: config.headersTimeoutMs, log });
  log.info(
    { port, opsPort: opsListener?.port, database: config.databaseUrl ? "postgresql" : "pglite", mail: mail?.destination ?? "courier off" },
    opts.worker ? "worker listening" : "listening",
  );
  const guess = worstDailyGuessChance({ policies: config.codes, ...config.rateLimits });
  log.info(
    { guessChance: oneIn(guess.chance), maxGuessChance: oneIn(config.maxGuessChance), codesPerDay: guess.sendsPerDay, wrongGuessesPerDay: guess.failuresPerDay },
    `worst-case chance of guessing an account's code within a day: ${oneIn(guess.chance)} (MAX_GUESS_CHANCE ${oneIn(config.maxGuessChance)})`,
  );
  courier?.start();
  const retention = opts.retention === false ? undefined : startRetention({ sql, clock, log, ...config.retention, events: metrics.retention });

  return {
    config,
    secrets,
    clock,
    metrics,
    orm,
    sql,
    codes,
    orgs,
    orgChanges,
    url: `${tls ? "https" : "http"}://${host}:${port}`,
    port,
    opsUrl: opsListener?.url,
    firstAdminToken,
    courier,
    deliveryWaits,
    announcer,
    health: ops.health,
    async close() {
      // Load balancers see NOT_SERVING; new connections are refused; requests in
      // flight finish within the grace period; only then is anything cancelled.
      const graceEnds = performance.now() + config.shutdownGraceMs;
      await ops.health.beginShutdown();
      pipeline.endStreams();
      // Waiting claims answer now, with what they have (nothing), as streams end.
      dueLater.stop();
      const waitsStopped = deliveryWaits.stop();
      await listener.close(config.shutdownGraceMs);
      tls?.close();
      await opsListener?.close();
      shutdown.abort();
      // The courier finishes the mails it is sending within what is left of the grace (then cuts
      // them) and hands back the rest of its batch; a supervisor that kills it sooner only makes
      // those go out again after their lease.
      await queuedFeed?.close();
      await mail?.stop(Math.max(0, graceEnds - performance.now()));
      await announcer?.close();
      await retention?.stop();
      await orgFeed.close();
      await waitsStopped;
      await orm.close();
      await tracing?.stop();
    },
  };
}
