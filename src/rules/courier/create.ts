// A courier and its mail transport, as both the API server and the courier
// worker run it.
import type { Clock } from "../../domain/clock.ts";
import type { Config } from "../../config/config.ts";
import type { Secrets } from "../../config/secrets.ts";
import { withTimeout } from "../../lib/abort.ts";
import type { Logger } from "../../lib/log.ts";
import { listenMailQueued } from "../../store/mail-queued.ts";
import type { Orm } from "../../store/orm.ts";
import type { Sql } from "../../store/sql.ts";
import type { CourierEvents } from "../events.ts";
import { Courier } from "./courier.ts";
import { createMailTransport } from "../mail/transport.ts";

export interface CourierDeps {
  config: Config;
  secrets: Secrets;
  sql: Sql;
  clock: Clock;
  log: Logger;
  events: CourierEvents;
}

/**
 * A courier and its mail transport. Stopping it lets the mails being sent finish within
 * `graceMs` (SHUTDOWN_GRACE, or what the server's shutdown left of it), then closes the
 * transport, cutting those still going out (recorded as failed, to go out again after
 * their backoff).
 */
export function createCourier(deps: CourierDeps): { courier: Courier; destination: string; stop(graceMs?: number): Promise<void> } {
  const transport = createMailTransport(deps.config);
  const courier = new Courier({
    sql: deps.sql,
    config: deps.config.courier,
    secrets: deps.secrets,
    clock: deps.clock,
    log: deps.log.child({ component: "courier" }),
    transport,
    events: deps.events,
  });
  return {
    courier,
    destination: transport.destination,
    async stop(graceMs = deps.config.shutdownGraceMs) {
      const stopped = courier.stop();
      // Past the grace, closing the transport cuts what is still going out.
      await withTimeout(stopped, graceMs).catch(() => {});
      transport.close();
      await stopped;
    },
  };
}

/**
 * Wakes `courier` whenever a process without a courier announces queued mail on
 * the database (store/mail-queued.ts), and once it listens again after a break;
 * answers its stop.
 */
export function wakeOnQueuedMail(orm: Orm, courier: Courier, log: Logger): Promise<{ close(): Promise<void> }> {
  return listenMailQueued(orm, {
    queued: (channels) => {
      if (channels.has("smtp")) courier.wake();
    },
    error: (err) => log.warn({ err }, "the connection listening for queued mail broke; opening it again (meanwhile the courier polls)"),
  });
}
