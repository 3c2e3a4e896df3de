// The event trail followed live (a page of it is store/events.ts's listEvents).
// What is recorded, and when, is decided where each change is made (store/codes.ts,
// store/outbox.ts, the admin rules); the order in which events are handed out,
// and why no event that commits late is ever skipped, in store/events.ts.
import type { EventPosition, TrailEvent } from "../domain/events.ts";
import { sleep } from "../lib/abort.ts";
import { eventsAfter } from "../store/events.ts";
import type { Sql } from "../store/sql.ts";

/** Events read at once while following. */
const BATCH = 500;

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
    if (events.length < BATCH) await sleep(opts.pollMs, opts.signal);
  }
}
