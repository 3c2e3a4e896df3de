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
  close(): void;
  /** Where mail goes, for the log; never with credentials. */
  readonly destination: string;
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
  const lanes = Array.from({ length: config.courier.smtpConnections }, () => new Lane(options, auth));
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

/** One SMTP connection, opened when needed, sending its messages one after another. */
class Lane {
  /** Messages sent to this lane and not yet settled, the one going out included. */
  pending = 0;
  readonly #options: SMTPConnection.Options;
  readonly #auth: SMTPConnection.Credentials | undefined;
  #connection: Promise<SMTPConnection> | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  #idle: NodeJS.Timeout | undefined;
  #closed = false;
  #held = false;
  /** For each message waiting for its turn: gives it up (it will not be started, and its sender hears NotStarted now). */
  readonly #giveUps = new Set<() => void>();

  constructor(options: SMTPConnection.Options, auth: SMTPConnection.Credentials | undefined) {
    this.#options = options;
    this.#auth = auth;
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
    this.#drop();
  }

  async #deliver(mail: OutgoingMessage): Promise<void> {
    if (this.#closed) throw new Error("the mail transport is closed");
    clearTimeout(this.#idle);
    const reused = this.#connection !== undefined;
    try {
      await this.#sendOn(await (this.#connection ??= this.#connect()), mail);
    } catch (err) {
      // After a failed transaction the connection's state is unknown: the next message gets a new one.
      this.#drop();
      // A connection that sat idle may have been closed by the server meanwhile: that is
      // no reason to fail the mail, which gets one more try on a new connection.
      if (!reused || !isConnectionLoss(err)) throw err;
      await this.#sendOn(await (this.#connection = this.#connect()), mail).catch((retryErr: unknown) => {
        this.#drop();
        throw retryErr;
      });
    }
  }

  #sendOn(connection: SMTPConnection, mail: OutgoingMessage): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      connection.send({ from: mail.from, to: [mail.to] }, mail.message, (err) => (err ? reject(err) : resolve())),
    );
  }

  #connect(): Promise<SMTPConnection> {
    const connection = new SMTPConnection(this.#options);
    const opened = new Promise<SMTPConnection>((resolve, reject) => {
      // An error with no message in flight (the server closing an idle connection)
      // must not become an uncaught exception; a send in flight gets it in its callback.
      connection.on("error", (err) => {
        reject(err);
        if (this.#connection === opened) this.#connection = undefined;
      });
      connection.once("end", () => {
        reject(new Error("the SMTP server closed the connection"));
        if (this.#connection === opened) this.#connection = undefined;
      });
      connection.connect(() => {
        if (!this.#auth) return resolve(connection);
        connection.login(this.#auth, (err) => (err ? reject(err) : resolve(connection)));
      });
    });
    opened.catch(() => connection.close());
    return opened;
  }

  #drop(): void {
    const connection = this.#connection;
    this.#connection = undefined;
    connection?.then((c) => c.quit(), () => {});
  }

  #armIdle(): void {
    clearTimeout(this.#idle);
    if (!this.#connection || this.#closed) return;
    this.#idle = setTimeout(() => this.#drop(), IDLE_MS);
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
