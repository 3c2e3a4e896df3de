// Every server process caches organizations and their mail templates
// (rules/organizations.ts, rules/mail/org-templates.ts). An admin change is
// announced with PostgreSQL's NOTIFY in the transaction that makes it, so it is
// heard once committed, by every process that LISTENs on the same database: each
// keeps one connection of its own for that, beside its pool. A process whose
// listening connection broke may have missed changes: once it listens again it
// is told to forget everything it cached (`lost`). PGlite serves one process
// only, which forgets its own changes itself: nothing to listen to.
import type pg from "pg";
import type { Orm } from "./orm.ts";
import type { Sql } from "./sql.ts";

export const ORG_CHANGES_CHANNEL = "codegate_org_changed";

/** Announces a change of an organization's settings or templates; run it in the transaction of the change. */
export async function notifyOrgChanged(sql: Sql, orgId: string): Promise<void> {
  await sql.query(`select pg_notify($1, $2)`, [ORG_CHANGES_CHANNEL, orgId]);
}

export interface OrgChangeHandlers {
  /** An organization changed. */
  changed(orgId: string): void;
  /** Changes may have been missed while not listening: forget everything. */
  lost(): void;
  /** The listening connection broke (it is opened again). */
  error(err: unknown): void;
}

const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 10_000;

/**
 * Listens for changes on a connection of its own, opened again (with backoff)
 * whenever it breaks. Answers once it listens, or once its first try failed
 * (then retried; `lost` is called once it listens), or at once on PGlite;
 * `close` ends it.
 */
export async function listenOrgChanges(orm: Orm, handlers: OrgChangeHandlers): Promise<{ close(): Promise<void> }> {
  const connection = orm.em.getConnection() as unknown as { getNativeClient?: () => Promise<unknown> };
  const native = (await connection.getNativeClient?.()) as (pg.Pool & { Client?: typeof pg.Client; options?: pg.ClientConfig }) | undefined;
  if (!native || typeof native.connect !== "function" || !native.Client) return { close: async () => {} };
  const pool = native;

  let closed = false;
  let client: pg.Client | undefined;
  let timer: NodeJS.Timeout | undefined;
  let delay = RETRY_MIN_MS;

  /** Connects and listens; a failure is handled as a break (retried). */
  async function open(first: boolean): Promise<void> {
    const c = new pool.Client!(pool.options);
    c.on("notification", (msg) => {
      if (msg.channel === ORG_CHANGES_CHANNEL && msg.payload) handlers.changed(msg.payload);
    });
    c.on("error", (err) => broken(c, err));
    c.on("end", () => broken(c, new Error("the connection listening for organization changes ended")));
    try {
      await c.connect();
      await c.query(`listen ${ORG_CHANGES_CHANNEL}`);
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
