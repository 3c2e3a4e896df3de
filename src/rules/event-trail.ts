// The event trail as administrators read it: a page of it, or followed live.
// What is recorded, and when, is decided where each change is made (store/codes.ts,
// store/outbox.ts, the admin rules); the order in which events are handed out,
// and why no event that commits late is ever skipped, in store/events.ts.
import type { EventPosition, TrailEvent } from "../domain/events.ts";
import { eventsAfter, listEvents, type EventFilter } from "../store/events.ts";
import type { Sql } from "../store/sql.ts";

/** Events read at once while following. */
const BATCH = 500;

export const eventPage = (sql: Sql, filter: EventFilter, before: EventPosition | undefined, size: number): Promise<TrailEvent[]> =>
  listEvents(sql, filter, before, size);

/**
 * The events after `after` (from the oldest retained when undefined), oldest
 * first, in batches, and then each new one once it is settled: looked for every
 * `pollMs`, until `signal` aborts. Each batch starts right after the last event
 * of the one before, so a caller that resumes from the last event it received
 * gets every later event exactly once.
 */
export async function* followEvents(sql: Sql, opts: { orgId: string; after?: EventPosition; pollMs: number; signal: AbortSignal }): AsyncGenerator<TrailEvent[]> {
  let after = opts.after;
  while (!opts.signal.aborted) {
    const events = await eventsAfter(sql, opts.orgId, after, BATCH);
    if (events.length > 0) {
      yield events;
      const last = events[events.length - 1];
      after = { tx: last.tx, id: last.id };
    }
    if (events.length < BATCH) await pause(opts.pollMs, opts.signal);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts; leaves no timer or listener behind. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
