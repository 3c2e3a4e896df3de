// Pruning on a timer, in every serving process (see store/retention.ts for what is pruned).
import type { Clock } from "../domain/clock.ts";
import type { Logger } from "../lib/log.ts";
import { prune } from "../store/retention.ts";
import type { Sql } from "../store/sql.ts";

/** Runs prune every `intervalMs` until stopped. */
export function startRetention(deps: { sql: Sql; clock: Clock; log: Logger; keepMs: number; eventsKeepMs: number; intervalMs: number }): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const run = () => {
    running = prune(deps.sql, deps.clock.now(), deps.keepMs, deps.eventsKeepMs).then(
      (p) => (p.codes || p.mails || p.rateLimits || p.events) && deps.log.info(p, "pruned dead rows"),
      (err) => deps.log.error({ err }, "pruning failed"),
    );
  };
  const timer = setInterval(run, deps.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
