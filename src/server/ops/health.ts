// Health for load balancers and orchestrators: the standard gRPC health service
// (grpc.health.v1.Health), and the facts behind GET /healthz and GET /readyz.
//
// Every service of the process depends on the same database, so each known
// service answers the overall status: SERVING while the database answers,
// NOT_SERVING when it does not or once the server has begun shutting down.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../../gen/grpc/health/v1/health_pb.ts";
import { attempt, withTimeout } from "../../lib/abort.ts";

export interface HealthChecks {
  /** Resolves when the database answers a trivial query. */
  database(): Promise<unknown>;
  /** Names of the checked-in migrations the database has not applied. */
  pendingMigrations(): Promise<string[]>;
}

export interface HealthOptions {
  /** How long one database answer stands for, so that probes do not hammer it. */
  cacheMs: number;
  /** A check that has not answered by then has failed. */
  timeoutMs: number;
  /** How often an open Watch looks at the database again. */
  watchIntervalMs: number;
}

export const defaultHealthOptions: HealthOptions = { cacheMs: 1_000, timeoutMs: 2_000, watchIntervalMs: 5_000 };

export interface Readiness {
  ready: boolean;
  body: { status: "ready" | "not_ready" | "shutting_down"; database: "ok" | "unavailable"; migrations: "applied" | "pending" | "unknown" };
}


export class HealthState {
  #services: readonly string[] = [];
  #known = new Set([""]);
  readonly #checks: HealthChecks;
  readonly #opts: HealthOptions;
  #shuttingDown = false;
  #changes = 0;
  #last: { at: number; up: boolean } | undefined;
  #inflight: Promise<boolean> | undefined;
  readonly #wakers = new Set<() => void>();

  constructor(checks: HealthChecks, opts: HealthOptions = defaultHealthOptions) {
    this.#checks = checks;
    this.#opts = opts;
  }

  /** Names the services this server has: their fully qualified names ("" is the server itself). */
  setServices(services: Iterable<string>): void {
    this.#services = [...new Set(services)];
    this.#known = new Set(["", ...this.#services]);
  }

  get services(): readonly string[] {
    return this.#services;
  }

  get options(): HealthOptions {
    return this.#opts;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  knows(service: string): boolean {
    return this.#known.has(service);
  }

  /**
   * From now on everything is NOT_SERVING and not ready. Resolves once open
   * Watches have had their turn to send that, so a shutdown that follows does
   * not cut them off first.
   */
  async beginShutdown(): Promise<void> {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.#changes++;
    for (const wake of [...this.#wakers]) wake();
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** Counts changes a Watch must hear about at once; see wait(). */
  get changes(): number {
    return this.#changes;
  }

  /** Whether the database answered, asking it at most once per cacheMs however many probes come. */
  databaseUp(): Promise<boolean> {
    if (this.#last && performance.now() - this.#last.at < this.#opts.cacheMs) return Promise.resolve(this.#last.up);
    this.#inflight ??= withTimeout(attempt(() => this.#checks.database()), this.#opts.timeoutMs)
      .then(() => true, () => false)
      .then((up) => {
        this.#last = { at: performance.now(), up };
        this.#inflight = undefined;
        return up;
      });
    return this.#inflight;
  }

  async status(): Promise<Status> {
    if (this.#shuttingDown) return Status.NOT_SERVING;
    const up = await this.databaseUp();
    return up && !this.#shuttingDown ? Status.SERVING : Status.NOT_SERVING;
  }

  async readiness(): Promise<Readiness> {
    const database = (await this.databaseUp()) ? "ok" : "unavailable";
    let migrations: Readiness["body"]["migrations"] = "unknown";
    if (database === "ok") {
      migrations = await withTimeout(attempt(() => this.#checks.pendingMigrations()), this.#opts.timeoutMs).then(
        (pending) => (pending.length ? "pending" : "applied"),
        () => "unknown" as const,
      );
    }
    const ready = !this.#shuttingDown && database === "ok" && migrations === "applied";
    const status = this.#shuttingDown ? "shutting_down" : ready ? "ready" : "not_ready";
    return { ready, body: { status, database, migrations } };
  }

  /**
   * Resolves after `ms`, when `signal` aborts, or at a change (the start of a
   * shutdown), whichever comes first; at once when a change came after the
   * caller read `changes` as `seen`.
   */
  wait(ms: number, signal: AbortSignal, seen: number): Promise<void> {
    return new Promise((resolve) => {
      if (signal.aborted || seen !== this.#changes) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done, { once: true });
      this.#wakers.add(done);
    });
  }
}

/** Service names echoed in errors are cut short: they are whatever the caller sent. */
const shown = (service: string) => JSON.stringify(service.length > 200 ? service.slice(0, 200) + "…" : service);

export function healthService(state: HealthState): ServiceImpl<typeof Health> {
  return {
    async check(req) {
      if (!state.knows(req.service)) throw new ConnectError(`unknown service ${shown(req.service)}`, Code.NotFound);
      return { status: await state.status() };
    },

    // Sends the status now and again whenever it changes, until the caller goes
    // away or the server stops. An unknown service is SERVICE_UNKNOWN and the
    // call stays open, as the protocol asks.
    async *watch(req, ctx) {
      let last: Status | undefined;
      while (!ctx.signal.aborted) {
        const seen = state.changes;
        const status = state.knows(req.service) ? await state.status() : Status.SERVICE_UNKNOWN;
        if (status !== last && !ctx.signal.aborted) {
          yield { status };
          last = status;
        }
        await state.wait(state.options.watchIntervalMs, ctx.signal, seen);
      }
    },

    async list() {
      const status = await state.status();
      return { statuses: Object.fromEntries(["", ...state.services].map((name) => [name, { status }])) };
    },
  };
}
