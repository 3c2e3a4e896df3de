// The delivery API, by the rules of the courier: the operator's own delivery
// service claims due messages of its channels under a lease, gets their bodies
// decrypted (for the claimant only: the outbox keeps them sealed), and acks each
// one delivered (marked sent, body wiped) or fails it (retried with the
// courier's backoff, abandoned after COURIER_MAX_ATTEMPTS, body wiped). At least
// once: a lease that ends unanswered lets the message be claimed again, with the
// same id.
import { randomUUID } from "node:crypto";
import type { Config } from "../../config/config.ts";
import type { Secrets } from "../../config/secrets.ts";
import type { Clock } from "../../domain/clock.ts";
import type { ApiChannel, Channel, MailStatus } from "../../domain/outbox.ts";
import type { Purpose } from "../../domain/purpose.ts";
import type { Logger } from "../../lib/log.ts";
import { ackMessages, claimMessages, failMessages, oldestDueMessage, releaseMessages, type LeasedKey } from "../../store/delivery.ts";
import { isDatabaseUnavailable, isLostToAnother } from "../../store/errors.ts";
import { DueFloor } from "../due-floor.ts";
import type { Sql } from "../../store/sql.ts";
import type { CourierEvents } from "../events.ts";
import { withRecipient } from "../mail/mime.ts";
import { decodeContent } from "../mail/payload.ts";
import { unseal } from "../mail/seal.ts";
import type { DueLater } from "./due-later.ts";
import type { DeliveryWaits } from "./waits.ts";

/** A claimed message as the worker gets it. */
export interface Delivery {
  orgId: string;
  id: string;
  channel: ApiChannel;
  purpose: Purpose;
  recipient: string;
  leaseToken: string;
  leaseExpiresAt: Date;
  /** 1 for the first attempt. */
  attempt: number;
  content: { kind: "text"; body: string } | { kind: "mail"; from: string; rfc822: Buffer };
}

export const DEFAULT_LEASE_MS = 60_000;
export const DEFAULT_CLAIM_SIZE = 10;

/**
 * The most a claim's answer carries, below the 4 MiB the server writes in one
 * message: past it the answer failed after the leases were taken, its messages
 * came back after their lease only to fail again, and were never abandoned. The
 * messages that do not fit are given back at once, for the next claim.
 */
export const CLAIM_ANSWER_BYTES = 3 * 1024 * 1024;

/** About what a delivery weighs in an answer: its content as JSON (the mail's bytes in base64, text escaped at worst twice), and the rest. */
function answerBytes(d: Delivery): number {
  return 1024 + (d.content.kind === "mail" ? Math.ceil(d.content.rfc822.length / 3) * 4 : 2 * Buffer.byteLength(d.content.body));
}

/**
 * Whether a claim's failure may have left messages that other claims skipped: not
 * when its call ended (the signal's reason, thrown before a statement starts), nor
 * when the database is out of reach (a claim woken for them would only fail too);
 * a deadlock or serialization failure did run, and held its rows until then.
 */
function lockedBeforeFailing(err: unknown, signal: AbortSignal | undefined): boolean {
  return err !== signal?.reason && (isLostToAnother(err) || !isDatabaseUnavailable(err));
}

/** What one claim took: the deliveries it answers, and whether it took as many as it could (more may be due). */
interface Claimed {
  deliveries: Delivery[];
  full: boolean;
}

export class DeliveryDesk {
  private readonly deps: { sql: Sql; config: Config["courier"]; secrets: Secrets; clock: Clock; log: Logger; events: CourierEvents; waits?: DeliveryWaits; released?: (channels: readonly ApiChannel[]) => void; dueLater?: DueLater };

  /**
   * Where its looks for due messages start, one per set of channels claimed: a
   * message of a channel no worker takes stays queued, and would hold the others' floor down.
   */
  private readonly floors = new Map<string, DueFloor>();

  constructor(deps: DeliveryDesk["deps"]) {
    this.deps = deps;
  }

  private floor(channels: readonly ApiChannel[]): DueFloor {
    const sorted = [...new Set(channels)].sort();
    const key = sorted.join(",");
    let floor = this.floors.get(key);
    if (!floor) this.floors.set(key, (floor = new DueFloor(() => oldestDueMessage(this.deps.sql, sorted), this.deps.clock)));
    return floor;
  }

  /**
   * Leases up to `size` due messages of these channels for `leaseMs`. With none
   * due, waits up to `call.waitMs` for some to be queued. Once the call's signal
   * has aborted (its caller left, its deadline passed), nothing more is claimed,
   * and what a claim in flight took is given back at once rather than after its lease.
   * A claim that fails otherwise, on a reachable database, wakes claims as a queued
   * message would, one per channel: its statement may have locked messages before it
   * failed, which claims looking meanwhile skipped (SKIP LOCKED) and now wait for.
   */
  async claim(channels: readonly ApiChannel[], size: number, leaseMs: number, call?: { waitMs: number; signal: AbortSignal }): Promise<Delivery[]> {
    const { deliveries, full } = await this.claimOrWait(channels, size, leaseMs, call);
    // A message wakes one waiting claim: when a burst was announced at once, a full batch may have left
    // some due, and one more waiting claim (per channel) looks for them.
    if (full) this.deps.waits?.wake(channels);
    return deliveries;
  }

  private async claimOrWait(channels: readonly ApiChannel[], size: number, leaseMs: number, call?: { waitMs: number; signal: AbortSignal }): Promise<Claimed> {
    const { waits } = this.deps;
    const claimFor = async () => {
      call?.signal.throwIfAborted();
      const claimed = await this.claimNow(channels, size, leaseMs, call?.signal);
      if (call?.signal.aborted && claimed.deliveries.length) await this.release(claimed.deliveries);
      call?.signal.throwIfAborted();
      return claimed;
    };
    if (!call || call.waitMs <= 0 || !waits) {
      return claimFor().catch((err: unknown) => {
        if (lockedBeforeFailing(err, call?.signal)) waits?.wake(channels);
        throw err;
      });
    }
    const until = performance.now() + call.waitMs;
    // The first waiting claim on a server starts hearing other servers' messages, and looks meanwhile:
    // what is due already is answered without waiting for the listening connection.
    let heard = waits.hearing;
    if (!heard) void waits.ready();
    /** The channels of the wake-up that sent this claim on its look. */
    let lookingFor: readonly Channel[] = [];
    for (;;) {
      const ticket = waits.ticket(channels);
      let looksAgain = false;
      try {
        const claimed = await claimFor().catch((err: unknown) => {
          // The look a wake-up sent this claim on did not run to its end: another waiting claim looks instead,
          // and one per channel for what a failed statement may have locked.
          ticket.drop();
          waits.wake(lockedBeforeFailing(err, call.signal) ? [...lookingFor, ...channels.filter((c) => !lookingFor.includes(c))] : lookingFor);
          throw err;
        });
        if (claimed.deliveries.length) return claimed;
        const left = until - performance.now();
        if (claimed.full) {
          // None of a full batch could be handed out (each failed here): more may be due, so look again.
          if (left <= 0) return claimed;
        } else if (heard) {
          if (!(await ticket.wait(left, call.signal))) return claimed;
        } else {
          // A message announced during that look went unheard: once hearing, look again. Meanwhile this
          // server's wake-ups go to the claims already waiting (one that came during the look too).
          heard = true;
          ticket.drop();
          if (!(await waits.heard(left, call.signal))) return claimed;
          lookingFor = [];
          continue;
        }
        looksAgain = true;
        lookingFor = ticket.wokenFor;
      } finally {
        ticket.drop(looksAgain);
      }
    }
  }

  /** Gives claimed messages back, due at once, and says so: a claim waiting for them takes them now. */
  private async release(messages: readonly (LeasedKey & { channel: ApiChannel })[]): Promise<void> {
    await releaseMessages(this.deps.sql, messages);
    // One channel per message: each wakes a waiting claim.
    this.deps.released?.(messages.map((m) => m.channel));
  }

  private async claimNow(channels: readonly ApiChannel[], size: number, leaseMs: number, signal?: AbortSignal): Promise<Claimed> {
    const { sql, clock, secrets, config, events, log } = this.deps;
    const now = clock.now();
    const leaseToken = randomUUID();
    const leaseExpiresAt = new Date(now.getTime() + leaseMs);
    const floor = this.floor(channels);
    const reportAbandoned = (abandoned: readonly Purpose[]) => {
      for (const purpose of abandoned) events.abandoned(purpose);
      log.warn({ abandoned: abandoned.length }, "delivery API: messages abandoned: their last attempt's lease lapsed (a worker stopped before an outcome)");
    };
    const { items: claimed, abandoned } = await claimMessages(sql, now, leaseExpiresAt, size, channels, leaseToken, config.maxAttempts, await floor.get(), signal, reportAbandoned);
    floor.looked(claimed.length + abandoned.length > 0);
    const deliveries: Delivery[] = [];
    const broken: (LeasedKey & { error: string })[] = [];
    for (const m of claimed) {
      try {
        const content = decodeContent(unseal(secrets.mailKeys, m.keyId, m.id, m.body), m.id, now);
        const base = { orgId: m.orgId, id: m.id, channel: m.channel, purpose: m.purpose, recipient: m.recipient, leaseToken, leaseExpiresAt, attempt: m.sendCount + 1 };
        if (content.kind === "text") deliveries.push({ ...base, content: { kind: "text", body: content.text } });
        else deliveries.push({ ...base, content: { kind: "mail", from: content.mail.from, rfc822: withRecipient(content.mail.message, m.recipient) } });
      } catch (err) {
        // A body this server cannot open (a key no longer configured) or a recipient that is no mail address: failed here, never handed out.
        broken.push({ orgId: m.orgId, id: m.id, leaseToken, error: String((err as Error)?.message ?? err).split("\n")[0].slice(0, 200) });
      }
    }
    if (broken.length) {
      await this.fail(broken);
      this.deps.log.warn({ failed: broken.length, error: broken[0].error }, "delivery API: messages that could not be handed out");
    }
    // As many as fit, in the order claimed; the first always does (the largest mail the templates allow is well under the budget).
    let fit = 0;
    for (let bytes = 0; fit < deliveries.length; fit++) {
      bytes += answerBytes(deliveries[fit]);
      if (fit > 0 && bytes > CLAIM_ANSWER_BYTES) break;
    }
    const left = deliveries.slice(fit);
    if (left.length) await this.release(left);
    return { deliveries: deliveries.slice(0, fit), full: size > 0 && claimed.length + abandoned.length >= size };
  }

  /** Marks delivered messages sent (their bodies wiped); answers the ids their leases still held. */
  async ack(keys: readonly LeasedKey[]): Promise<string[]> {
    const acked = await ackMessages(this.deps.sql, this.deps.clock.now(), keys);
    for (const m of acked) this.deps.events.sent(m.purpose);
    return acked.map((m) => m.id);
  }

  /** Records failed deliveries of the messages their leases still hold: retried later, or abandoned at the retry limit or at once when permanent. */
  async fail(failures: readonly (LeasedKey & { error: string; permanent?: boolean })[]): Promise<{ id: string; status: MailStatus; nextAttemptAt: Date }[]> {
    const { sql, clock, config, events } = this.deps;
    const rows = await failMessages(sql, clock.now(), config, failures);
    for (const r of rows) {
      if (r.status === "abandoned") {
        events.abandoned(r.purpose);
      } else {
        events.retried(r.purpose);
        // Its retry wakes a waiting claim at its time.
        this.deps.dueLater?.add(r.channel, r.nextAttemptAt);
      }
    }
    return rows.map((r) => ({ id: r.id, status: r.status, nextAttemptAt: r.nextAttemptAt }));
  }
}
