// Where mails go: an SMTP server when SMTP_URL is set, otherwise .eml files under
// DATA_DIR/mail, so that the embedded default works offline.
//
// SMTP goes over a few long-lived connections of nodemailer's SMTPConnection,
// each sending one message after another. Messages arrive built (mime.ts), so
// nothing is composed here: nodemailer's pooled sendMail cost about 1 ms of CPU
// per mail, of which 0.8 ms was composing; a message over SMTPConnection costs
// about 0.12 ms (bench/micro-mail.ts).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import type { Config } from "../../config/config.ts";

export interface OutgoingMessage {
  /** The outbox row's id. */
  id: string;
  /** SMTP's MAIL FROM. */
  from: string;
  to: string;
  /** The whole message, headers included. */
  message: Buffer;
}

export interface MailTransport {
  /** Resolves once the mail is accepted; rejects with a reason safe to store, or with NotStarted. */
  send(mail: OutgoingMessage): Promise<void>;
  /**
   * Held, messages waiting behind others are not started: they reject with
   * NotStarted (a stopping courier hands them back instead of waiting for them,
   * each of which may take the SMTP timeouts); those already started go on.
   */
  hold(held: boolean): void;
  /** Closes every connection; a message being sent rejects with SendCut. */
  close(): void;
  /** Where mail goes, for the log; never with credentials. */
  readonly destination: string;
}

/**
 * A message the server took longer over than COURIER_SEND_TIMEOUT, from the connection on
 * (nodemailer's timeouts are idle timeouts, which a reply dripping a byte at a time never
 * reaches), or one the transport was closed on while sending it: its connection is cut.
 */
export class SendCut extends Error {
  readonly code = "ESENDCUT";
  constructor(why: string) {
    super(why);
  }
}

/** A message the transport was held before it started: not tried, nothing to record. */
export class NotStarted extends Error {
  constructor() {
    super("the mail transport is held: the message was not started");
  }
}

/** A connection without a message for this long is closed (servers drop idle ones after a few minutes). */
const IDLE_MS = 30_000;

export function createMailTransport(config: Pick<Config, "smtpUrl" | "dataDir" | "courier">): MailTransport {
  const sendTimeoutMs = config.courier.sendTimeoutMs;
  const url = config.smtpUrl;
  if (!url) return emlTransport(join(config.dataDir, "mail"));
  const port = url.port ? Number(url.port) : url.protocol === "smtps:" ? 465 : 587;
  const options: SMTPConnection.Options = {
    host: url.hostname,
    port,
    secure: url.protocol === "smtps:",
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
  };
  const auth = url.username ? { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } : undefined;
  const lanes = Array.from({ length: config.courier.smtpConnections }, () => new Lane(options, auth, sendTimeoutMs));
  return {
    destination: `smtp ${url.hostname}:${port}`,
    send(mail) {
      // The lane with the fewest messages waiting: each sends one at a time.
      let lane = lanes[0];
      for (const l of lanes) if (l.pending < lane.pending) lane = l;
      return lane.send(mail);
    },
    hold(held) {
      for (const lane of lanes) lane.hold(held);
    },
    close() {
      for (const lane of lanes) lane.close();
    },
  };
}

/** A connection of a lane: the SMTPConnection, and its opening (connected, greeted, logged in). */
interface Open {
  smtp: SMTPConnection;
  ready: Promise<SMTPConnection>;
}

/** One SMTP connection, opened when needed, sending its messages one after another. */
class Lane {
  /** Messages sent to this lane and not yet settled, the one going out included. */
  pending = 0;
  readonly #options: SMTPConnection.Options;
  readonly #auth: SMTPConnection.Credentials | undefined;
  readonly #sendTimeoutMs: number;
  #connection: Open | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  #idle: NodeJS.Timeout | undefined;
  #closed = false;
  #held = false;
  /** For each message waiting for its turn: gives it up (it will not be started, and its sender hears NotStarted now). */
  readonly #giveUps = new Set<() => void>();
  /** Cuts the message being sent, if one is: its connection closed, its sender told `why`. */
  #cut: ((why: string) => void) | undefined;

  constructor(options: SMTPConnection.Options, auth: SMTPConnection.Credentials | undefined, sendTimeoutMs: number) {
    this.#options = options;
    this.#auth = auth;
    this.#sendTimeoutMs = sendTimeoutMs;
  }

  send(mail: OutgoingMessage): Promise<void> {
    this.pending++;
    if (this.#held) return this.#done(Promise.reject(new NotStarted()));
    let givenUp = false;
    let giveUp!: () => void;
    const refused = new Promise<never>((_, reject) => {
      giveUp = () => {
        givenUp = true;
        reject(new NotStarted());
      };
    });
    this.#giveUps.add(giveUp);
    const turn = this.#tail.then(() => {
      this.#giveUps.delete(giveUp);
      if (givenUp) throw new NotStarted();
      return this.#deliver(mail);
    });
    this.#tail = turn.catch(() => {});
    return this.#done(Promise.race([turn, refused]));
  }

  hold(held: boolean): void {
    this.#held = held;
    if (!held) return;
    for (const giveUp of this.#giveUps) giveUp();
    this.#giveUps.clear();
  }

  #done(sent: Promise<void>): Promise<void> {
    return sent.finally(() => {
      this.pending--;
      if (this.pending === 0) this.#armIdle();
    });
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#idle);
    this.#cut?.("the mail transport was closed (the courier stopping) while the mail was being sent");
    this.#drop(this.#connection);
  }

  /** One message, from the connection on, within COURIER_SEND_TIMEOUT. */
  async #deliver(mail: OutgoingMessage): Promise<void> {
    if (this.#closed) throw new Error("the mail transport is closed");
    clearTimeout(this.#idle);
    const attempt = { cut: false, open: undefined as Open | undefined };
    let timer: NodeJS.Timeout | undefined;
    const cut = new Promise<never>((_, reject) => {
      this.#cut = (why) => {
        attempt.cut = true;
        // Whatever the connection is doing: closed at once, not asked to QUIT.
        if (attempt.open) this.#drop(attempt.open, { now: true });
        reject(new SendCut(why));
      };
      timer = setTimeout(() => this.#cut?.(`the SMTP server took longer than COURIER_SEND_TIMEOUT (${this.#sendTimeoutMs} ms) over the mail`), this.#sendTimeoutMs);
    });
    try {
      // The attempt goes on, unheard, once cut: its connection is closed under it.
      await Promise.race([this.#attempt(mail, attempt), cut]);
    } finally {
      clearTimeout(timer);
      this.#cut = undefined;
    }
  }

  async #attempt(mail: OutgoingMessage, attempt: { cut: boolean; open: Open | undefined }): Promise<void> {
    const reused = this.#connection !== undefined;
    attempt.open = this.#connection ??= this.#connect();
    try {
      await this.#sendOn(await attempt.open.ready, mail);
    } catch (err) {
      // After a failed transaction the connection's state is unknown: the next message gets a new one.
      this.#drop(attempt.open);
      // A connection that sat idle may have been closed by the server meanwhile: that is
      // no reason to fail the mail, which gets one more try on a new connection.
      if (attempt.cut || !reused || !isConnectionLoss(err)) throw err;
      const retry = (attempt.open = this.#connection = this.#connect());
      await this.#sendOn(await retry.ready, mail).catch((retryErr: unknown) => {
        this.#drop(retry);
        throw retryErr;
      });
    }
  }

  #sendOn(connection: SMTPConnection, mail: OutgoingMessage): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      connection.send({ from: mail.from, to: [mail.to] }, mail.message, (err) => (err ? reject(err) : resolve())),
    );
  }

  #connect(): Open {
    const smtp = new SMTPConnection(this.#options);
    const open: Open = {
      smtp,
      ready: new Promise<SMTPConnection>((resolve, reject) => {
        // An error with no message in flight (the server closing an idle connection)
        // must not become an uncaught exception; a send in flight gets it in its callback.
        smtp.on("error", (err) => {
          reject(err);
          if (this.#connection === open) this.#connection = undefined;
        });
        smtp.once("end", () => {
          reject(new Error("the SMTP server closed the connection"));
          if (this.#connection === open) this.#connection = undefined;
        });
        smtp.connect(() => {
          if (!this.#auth) return resolve(smtp);
          smtp.login(this.#auth, (err) => (err ? reject(err) : resolve(smtp)));
        });
      }),
    };
    open.ready.catch(() => smtp.close());
    return open;
  }

  /** Lets go of `open` (the lane's connection, unless it has another by now): after a QUIT, or at once. */
  #drop(open: Open | undefined, how: { now?: boolean } = {}): void {
    if (!open) return;
    if (this.#connection === open) this.#connection = undefined;
    if (how.now) return open.smtp.close();
    open.ready.then((c) => c.quit(), () => {});
  }

  #armIdle(): void {
    clearTimeout(this.#idle);
    if (!this.#connection || this.#closed) return;
    const open = this.#connection;
    this.#idle = setTimeout(() => this.#drop(open), IDLE_MS);
    this.#idle.unref();
  }
}

/** The connection went away (closed, reset, timed out, or the server said 421), not the mail refused. */
function isConnectionLoss(err: unknown): boolean {
  const e = err as { code?: string; responseCode?: number };
  return e?.responseCode === 421 || e?.code === "ECONNECTION" || e?.code === "ESOCKET" || e?.code === "ETIMEDOUT";
}

function emlTransport(dir: string): MailTransport {
  let made = false;
  return {
    destination: `.eml files in ${dir}`,
    async send(mail) {
      if (!made) mkdirSync(dir, { recursive: true, mode: 0o700 }), (made = true);
      writeFileSync(join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}-${mail.id}.eml`), mail.message, { mode: 0o600 });
    },
    // A file is written at once: nothing waits.
    hold() {},
    close() {},
  };
}
