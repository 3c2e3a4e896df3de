// A connection of its own, beside the pool, that LISTENs on one of PostgreSQL's
// notification channels, opened again (with backoff) whenever it breaks. A
// process whose connection broke may have missed notifications: once it listens
// again it is told so (`lost`). PGlite serves one process only: nothing to hear
// from another, so nothing listens.
import type pg from "pg";
import { pgPoolOf, type Orm } from "./orm.ts";

export interface ListenHandlers {
  /** A notification on the channel, with its payload ('' for none). */
  notified(payload: string): void;
  /** Notifications may have been missed while not listening. */
  lost(): void;
  /** The listening connection broke (it is opened again). */
  error(err: unknown): void;
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 10_000;

/**
 * Listens on `channel` (an SQL identifier of ours, not user input). Answers once it
 * listens, or once its first try failed (then retried; `lost` is called once it
 * listens), or at once on PGlite; `close` ends it.
 */
export async function listen(orm: Orm, channel: string, handlers: ListenHandlers): Promise<{ close(): Promise<void> }> {
  const found = await pgPoolOf(orm);
  if (!found) return { close: async () => {} };
  const pool = found;

  let closed = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  let delay = RETRY_MIN_MS;

  /** Connects and listens; a failure is handled as a break (retried). */
  async function open(first: boolean): Promise<void> {
    const c = new pool.Client(pool.options);
    c.on("notification", (msg) => {
      if (msg.channel === channel) handlers.notified(msg.payload ?? "");
    });
    c.on("error", (err) => broken(c, err));
    c.on("end", () => broken(c, new Error(`the connection listening on ${channel} ended`)));
    try {
      await c.connect();
      await c.query(`listen ${channel}`);
    } catch (err) {
      broken(c, err);
      return;
    }
    if (closed) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
    delay = RETRY_MIN_MS;
    if (!first) handlers.lost();
  }

  function broken(c: pg.Client, err: unknown): void {
    if (closed || (client !== undefined && client !== c) || timer) return;
    client = undefined;
    c.removeAllListeners("end");
    c.end().catch(() => {});
    handlers.error(err);
    timer = setTimeout(() => {
      timer = undefined;
      if (!closed) void open(false);
    }, delay);
    timer.unref();
    delay = Math.min(RETRY_MAX_MS, delay * 2);
  }

  await open(true);
  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = undefined;
      if (c) {
        c.removeAllListeners("end");
        await c.end().catch(() => {});
      }
    },
  };
}
