// Pruning on a timer, in every serving process (see store/retention.ts for what is
// pruned). One run per interval serves the whole deployment, and each run scans the
// large tables: a process prunes only when it takes the job's turn
// (store/job-turns.ts), so that N processes prune once per interval, not N times.
import { hostname } from "node:os";
import type { Clock } from "../domain/clock.ts";
import type { Logger } from "../lib/log.ts";
import { renewTurn, takeTurn } from "../store/job-turns.ts";
import { prune } from "../store/retention.ts";
import type { Sql } from "../store/sql.ts";
import type { RetentionEvents } from "./events.ts";

const JOB = "retention";

/**
 * A turn lasts a little less than the interval, so that a process pruning alone
 * finds its own last turn over at its next tick; a run that takes longer renews
 * it as it goes, a third of the way through each turn.
 */
const TURN_SHARE = 0.9;
const RENEW_SHARE = 0.3;

export interface RetentionDeps {
  sql: Sql;
  clock: Clock;
  log: Logger;
  keepMs: number;
  eventsKeepMs: number;
  intervalMs: number;
  events?: RetentionEvents;
  /** Who takes the turn, as the job_turn row names it; this process by default. */
  holder?: string;
}

/** Runs prune every `intervalMs`, when this process takes the turn, until stopped. */
export function startRetention(deps: RetentionDeps): { stop(): Promise<void> } {
  const holder = deps.holder ?? `${hostname()}:${process.pid}`;
  const turnEnd = (from: Date) => new Date(from.getTime() + deps.intervalMs * TURN_SHARE);
  const tick = async () => {
    const now = deps.clock.now();
    if (!(await takeTurn(deps.sql, JOB, holder, now, turnEnd(now)))) return deps.events?.ran("skipped");
    // One renewal at a time (two in flight could commit out of order), and none left going once the run is done.
    let renewing: Promise<void> | undefined;
    const renewal = setInterval(() => {
      renewing ??= renewTurn(deps.sql, JOB, holder, turnEnd(deps.clock.now()))
        .catch((err) => deps.log.warn({ err }, "renewing the retention turn failed"))
        .finally(() => (renewing = undefined));
    }, deps.intervalMs * RENEW_SHARE);
    renewal.unref();
    try {
      const p = await prune(deps.sql, now, deps.keepMs, deps.eventsKeepMs);
      if (p.codes || p.mails || p.rateLimits || p.events) deps.log.info(p, "pruned dead rows");
    } finally {
      clearInterval(renewal);
      await renewing;
    }
    deps.events?.ran("pruned");
  };
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    // A run of this process still going holds the turn: this tick is skipped too.
    if (running) return deps.events?.ran("skipped");
    running = tick()
      .catch((err) => {
        deps.log.error({ err }, "pruning failed");
        deps.events?.ran("failed");
      })
      .finally(() => (running = undefined));
  }, deps.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
