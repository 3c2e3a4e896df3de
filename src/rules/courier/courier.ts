// The courier: claims queued mails in batches (FOR UPDATE SKIP LOCKED, then a
// lease, so several couriers never send one mail twice and a crashed one's batch
// is taken over when its lease runs out), sends them, and records the outcome.
// Failures are retried with exponential backoff up to a limit, then abandoned.
// A sent or abandoned mail's body is wiped: it held a live code.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { Config } from "../../config/config.ts";
import type { Secrets } from "../../config/secrets.ts";
import type { Clock } from "../../domain/clock.ts";
import type { Purpose } from "../../domain/purpose.ts";
import type { Logger } from "../../lib/log.ts";
import { claimMails, markFailed, markSent, oldestDueMail, releaseClaims, renewClaims, type CourierClaim, type MailKey } from "../../store/outbox.ts";
import { DueFloor } from "../due-floor.ts";
import type { Sql } from "../../store/sql.ts";
import type { CourierEvents } from "../events.ts";
import { contextOfTraceparent, inSpan, SpanKind } from "../../lib/tracing.ts";
import { withRecipient } from "../mail/mime.ts";
import { decodeMail } from "../mail/payload.ts";
import { unseal } from "../mail/seal.ts";
import { NotStarted, type MailTransport } from "../mail/transport.ts";

/**
 * How long a claim holds without renewal. A courier renews the claim of its
 * batch while it works on it, so a crashed one's batch is taken over within
 * this; a short lease is what lets a restarted server deliver the mails its
 * predecessor had claimed.
 */
const LEASE_MS = 20_000;

/**
 * While more of its batch is being delivered, an outcome waits this long for
 * others to be recorded with it. Recorded one statement per 3 or 4 mails, the
 * outcomes cost PostgreSQL about as much CPU as the rest of a delivery; within
 * a 5 ms gather, much less (bench "courier" flow: PostgreSQL 198-204 -> 121-122
 * µs per mail, 1604-1683 -> 1810 mails/s, the server's CPU unchanged). A crash
 * now also resends the mails of these 5 ms, as it resends those in flight.
 */
const GATHER_MS = 5;

/**
 * After a batch it did not fill, the courier waits this long before it looks
 * again, for the mail queued meanwhile to make one batch: woken by every send
 * (directly, or over NOTIFY from another process), it otherwise looked again at
 * once and claimed a mail or two at a time, and at 570 sends/s spent 480 µs of
 * its CPU and 1,210 of PostgreSQL's per mail against 290 and 975 when it slept
 * out its poll (bench lag flow). The first mail after an idle spell goes out at
 * once; the next ones wait at most this much more.
 */
const FILL_MS = 50;

/**
 * An outcome statement that fails is tried again after these waits: left
 * unrecorded, its mails stay claimed until the lease runs out and are then sent
 * a second time. (A statement that committed in part or whole but whose answer
 * was lost finds those mails no longer claimed when tried again: it records
 * nothing twice.) A courier that is stopping does not wait to try again: its
 * process is on its way out, and those mails go out again after their lease.
 */
const OUTCOME_RETRY_MS = [50, 250, 1000];

export class Courier {
  private readonly deps: {
    sql: Sql;
    config: Config["courier"];
    secrets: Secrets;
    clock: Clock;
    log: Logger;
    transport: MailTransport;
    events: CourierEvents;
  };
  private running: Promise<void> | undefined;
  private stopping = false;
  private wakeUp: (() => void) | undefined;
  private woken = false;

  /** Where its looks for due mail start. */
  private readonly floor: DueFloor;

  constructor(deps: Courier["deps"]) {
    this.deps = deps;
    this.floor = new DueFloor(() => oldestDueMail(deps.sql), deps.clock);
  }

  start(): void {
    if (this.running) return;
    this.stopping = false;
    this.deps.transport.hold(false);
    this.deps.log.info({ destination: this.deps.transport.destination }, "courier started");
    this.running = this.loop();
  }

  /** Asks the loop to look for work now (a mail was just queued). */
  wake(): void {
    this.woken = true;
    this.wakeUp?.();
  }

  /** Finishes the mails of its batch that are being sent, hands back those not started, then stops. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.deps.transport.hold(true);
    this.wakeUp?.();
    await this.running;
    this.running = undefined;
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      let handled = 0;
      // A look a wake-up asked for that finds nothing is made once more, FILL_MS later, before the
      // courier sleeps out its poll: the mail it was told of may be dated by a clock a little ahead of its own.
      const asked = this.woken;
      try {
        this.woken = false;
        handled = await this.runOnce();
      } catch (err) {
        this.deps.log.error({ err }, "courier batch failed");
      }
      if (this.stopping) break;
      if (handled === 0 && !this.woken) await this.pause(asked ? FILL_MS : this.deps.config.pollMs, { wakeable: true });
      else if (handled > 0 && handled < this.deps.config.batchSize) await this.pause(FILL_MS, { wakeable: false });
    }
  }

  /** Waits `ms`; a stop ends the wait, and so does a wake when `wakeable`. */
  private async pause(ms: number, { wakeable }: { wakeable: boolean }): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.wakeUp = () => {
        if (!wakeable && !this.stopping) return;
        clearTimeout(timer);
        resolve();
      };
    });
    this.wakeUp = undefined;
  }

  /** Claims one batch and delivers it; answers how many mails it tried or abandoned (not those it handed back). */
  async runOnce(): Promise<number> {
    const { sql, config, clock, transport, secrets, log, events } = this.deps;
    const now = clock.now();
    // Names this claim: its renewals and outcomes change only the mails it still holds (store/outbox.ts).
    const claim = { lease: randomUUID(), at: now };
    const reportAbandoned = (abandoned: readonly Purpose[]) => {
      for (const purpose of abandoned) events.abandoned(purpose);
      log.warn({ abandoned: abandoned.length }, "mail abandoned: its last attempt's lease lapsed (a courier stopped before an outcome)");
    };
    const until = new Date(now.getTime() + LEASE_MS);
    const { items: batch, abandoned } = await claimMails(sql, claim, until, config.batchSize, config.maxAttempts, await this.floor.get(), reportAbandoned);
    this.floor.looked(batch.length + abandoned.length > 0);
    // A claim that only abandoned mails did work all the same: the next look comes soon, not after a poll.
    if (batch.length === 0) return abandoned.length;
    const renewal = setInterval(() => {
      renewClaims(sql, claim, new Date(clock.now().getTime() + LEASE_MS), batch).catch((err: unknown) => log.warn({ err }, "courier could not renew its claim"));
    }, LEASE_MS / 3);
    // Each outcome is recorded as soon as it is known (within GATHER_MS), not when the whole batch is
    // done: a crash then sends again only the mails that were in flight, not every mail of the batch.
    // Mails the transport did not start (the courier is stopping) are handed back the same way, as they come,
    // for the next claim to take now, while those started are still going out.
    const outcomes = new OutcomeRecorder(batch.length, (o) => this.record(claim, o));
    try {
      await Promise.all(
        batch.map(async (m) => {
          try {
            if (!m.body) throw new Error("the queued mail has no body");
            const { from, message, trace } = decodeMail(unseal(secrets.mailKeys, m.keyId, m.id, m.body), m.id, clock.now());
            // Answers whether the mail went out, false when the transport did not start it (not a failure, in its span either).
            // A failure is told by describe() before its span records it: the server's words may quote the code.
            const send = () =>
              transport.send({ id: m.id, from, to: m.recipient, message: withRecipient(message, m.recipient) }).then(
                () => true,
                (err: unknown) => (err instanceof NotStarted ? false : Promise.reject(new Error(describe(err)))),
              );
            // The delivery of a traced call's mail continues its trace.
            const parent = contextOfTraceparent(trace);
            const sent = await (parent ? inSpan("deliver mail", { kind: SpanKind.CLIENT, parent, attributes: { "codegate.mail_id": m.id, "codegate.purpose": m.purpose, "codegate.attempt": m.sendCount + 1 } }, send) : send());
            outcomes.add(sent ? { sent: { orgId: m.orgId, id: m.id, purpose: m.purpose } } : { handedBack: { orgId: m.orgId, id: m.id } });
          } catch (err) {
            const nextAt = new Date(clock.now().getTime() + this.backoff(m.sendCount + 1));
            // As the outcome statement decides, by the row's count, which nobody else changes while this claim holds it.
            const abandoned = m.sendCount + 1 >= config.maxAttempts;
            outcomes.add({ failed: { orgId: m.orgId, id: m.id, purpose: m.purpose, abandoned, nextAt, error: describe(err) } });
          }
        }),
      );
      await outcomes.flushed();
    } finally {
      clearInterval(renewal);
    }
    // The mails it tried: a held courier that hands back all it claims has handled none.
    return batch.length - outcomes.handedBack;
  }

  /**
   * Writes the outcomes of some mails: the sent, the failed and the handed back
   * each by their own statement, each written even when another fails. A hand-back
   * that fails is not tried again: the mails' lease runs out instead.
   */
  private async record(claim: CourierClaim, { sent, failed, handedBack }: Outcomes): Promise<void> {
    const { sql, config, clock, log, events } = this.deps;
    const done = clock.now();
    const writes = await Promise.allSettled([
      sent.length &&
        this.persistently(() => markSent(sql, done, claim, sent)).then(({ value: marked, retried }) => {
          for (const m of sent) events.sent(m.purpose);
          // After a failed try, mails not found may be those it recorded before its answer was lost.
          if (marked < sent.length && !retried) log.warn({ sent: sent.length, lost: sent.length - marked }, "courier sent mails whose claim it had lost: another courier may send them again");
        }),
      failed.length &&
        this.persistently(() => markFailed(sql, done, config.maxAttempts, claim, failed)).then(({ value: rows, retried }) => {
          // A mail the statement did not find was taken over with its claim: its new courier counts it. But after
          // a failed try, it may be one that try recorded before its answer was lost: counted then.
          const found = new Set(rows.map((r) => r.id));
          const counted = failed.filter((m) => retried || found.has(m.id));
          for (const m of counted) (m.abandoned ? events.abandoned : events.retried)(m.purpose);
          if (counted.length < failed.length) log.warn({ failed: failed.length, lost: failed.length - counted.length }, "courier failed mails whose claim it had lost");
          if (counted.length) log.warn({ failed: counted.length, abandoned: counted.filter((m) => m.abandoned).length, error: counted[0].error }, "mail delivery failed");
        }),
      handedBack.length && releaseClaims(sql, claim, handedBack).catch((err: unknown) => log.warn({ err }, "courier could not hand back the mails it did not start")),
    ]);
    const error = writes.find((w) => w.status === "rejected");
    if (error) throw error.reason;
  }

  /** `write`, tried again after each of OUTCOME_RETRY_MS while it fails and the courier is not stopping; the last failure is thrown. */
  private async persistently<T>(write: () => Promise<T>): Promise<{ value: T; retried: boolean }> {
    for (let tries = 0; ; tries++) {
      try {
        return { value: await write(), retried: tries > 0 };
      } catch (err) {
        const waitMs = OUTCOME_RETRY_MS[tries];
        if (waitMs === undefined || this.stopping) throw err;
        this.deps.log.warn({ err, retryInMs: waitMs }, "courier could not record outcomes: trying again");
        await sleep(waitMs);
      }
    }
  }

  /** Exponential, capped, with jitter so that retries of a failed batch spread out. */
  private backoff(attempt: number): number {
    const { backoffBaseMs, backoffMaxMs } = this.deps.config;
    const ms = Math.min(backoffMaxMs, backoffBaseMs * 2 ** (attempt - 1));
    return Math.round(ms * (0.75 + Math.random() * 0.5));
  }
}

interface SentMail {
  orgId: string;
  id: string;
  purpose: Purpose;
}

interface FailedMail {
  orgId: string;
  id: string;
  purpose: Purpose;
  /** The mail's last attempt: it is given up on, not tried again. */
  abandoned: boolean;
  nextAt: Date;
  error: string;
}

/** What became of some mails of a batch. */
interface Outcomes {
  sent: SentMail[];
  failed: FailedMail[];
  /** Not started (the courier is stopping): given back untried. */
  handedBack: MailKey[];
}

/**
 * Records the outcomes of a batch of `expected` mails as they come, gathering
 * those that come close together into one statement: one write at a time, the
 * next one with whatever came meanwhile, after waiting up to GATHER_MS for more
 * while some of the batch is still out. The batch's last outcome ends the wait.
 */
class OutcomeRecorder {
  #pending: Outcomes = { sent: [], failed: [], handedBack: [] };
  /** Mails of the batch handed back so far. */
  handedBack = 0;
  #outstanding: number;
  #endGather: (() => void) | undefined;
  #writing: Promise<void> = Promise.resolve();
  #error: unknown;
  readonly #write: (outcomes: Outcomes) => Promise<void>;

  constructor(expected: number, write: (outcomes: Outcomes) => Promise<void>) {
    this.#outstanding = expected;
    this.#write = write;
  }

  /** The outcome of one mail of the batch. */
  add(outcome: { sent: SentMail } | { failed: FailedMail } | { handedBack: MailKey }): void {
    const p = this.#pending;
    const first = p.sent.length + p.failed.length + p.handedBack.length === 0;
    if ("sent" in outcome) p.sent.push(outcome.sent);
    else if ("failed" in outcome) p.failed.push(outcome.failed);
    else {
      p.handedBack.push(outcome.handedBack);
      this.handedBack++;
    }
    if (--this.#outstanding <= 0) this.#endGather?.();
    if (first) this.#writing = this.#writing.then(() => this.#drain());
  }

  async #drain(): Promise<void> {
    if (this.#outstanding > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, GATHER_MS);
        this.#endGather = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#endGather = undefined;
    } else {
      // Outcomes settled in the same turn go together.
      await new Promise((resolve) => setImmediate(resolve));
    }
    const outcomes = this.#pending;
    this.#pending = { sent: [], failed: [], handedBack: [] };
    await this.#write(outcomes).catch((err: unknown) => {
      this.#error ??= err;
    });
  }

  /** Resolves once every outcome added so far is written; rejects with the first failed write. */
  async flushed(): Promise<void> {
    await this.#writing;
    if (this.#error !== undefined) throw this.#error;
  }
}

/**
 * A delivery error as stored (last_error, which ListCourierMessages answers) and logged.
 * Never in the SMTP server's own words: a content filter's refusal may quote the mail,
 * and with it the live code. What happened is in its codes: nodemailer's (EENVELOPE at
 * MAIL FROM or RCPT TO, EMESSAGE at DATA or after it, ETIMEDOUT, ECONNECTION, …), the
 * reply code, the enhanced status code (RFC 3463) and the command. An error without a
 * reply (ours, the socket's) keeps its first line. Control characters go: PostgreSQL
 * refuses a NUL in text, and the outcome would never be recorded.
 */
export function describe(err: unknown): string {
  const e = err as { code?: unknown; responseCode?: unknown; response?: unknown; command?: unknown; message?: unknown };
  const code = typeof e?.code === "string" && /^[A-Z]{2,16}$/.test(e.code) ? e.code : undefined;
  if (e?.response !== undefined || e?.responseCode !== undefined) {
    const reply = typeof e.responseCode === "number" ? e.responseCode : undefined;
    const enhanced = /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})(?!\d)/.exec(String(e.response ?? ""))?.[1];
    const command = typeof e.command === "string" && /^[A-Z][A-Z ]{1,15}$/.test(e.command) ? `at ${e.command}` : undefined;
    return [code, reply, enhanced, command, "(the SMTP server's reply is not kept: it may quote the mail)"].filter(Boolean).join(" ");
  }
  const first = String(e?.message ?? err).split("\n")[0].toWellFormed().replace(/[\x00-\x1f\x7f]/g, "?");
  return [code, first].filter(Boolean).join(" ").slice(0, 200);
}
