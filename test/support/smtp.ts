// A real SMTP server in the test process (smtp-server), parsing what it receives
// with mailparser, so the courier is tested over the wire, not against a mock.
import { SMTPServer } from "smtp-server";
import { simpleParser, type ParsedMail } from "mailparser";
import { freePort } from "./net.ts";

export interface ReceivedMail {
  to: string;
  subject: string;
  text: string;
  html: string;
  messageId: string;
  from: string;
  raw: ParsedMail;
}

export class SmtpSink {
  readonly mails: ReceivedMail[] = [];
  /** SMTP connections accepted so far. */
  connections = 0;
  /** While set, a received mail is recorded but its acceptance (the reply to DATA) waits for it. */
  replyGate: Promise<void> | undefined;
  /** When it answers a reply for a mail, that mail is refused with it (554), as a content filter would. */
  refuse: ((mail: ReceivedMail) => string | undefined) | undefined;
  readonly port: number;
  private server: SMTPServer | undefined;
  /** Checks to run on each mail that arrives (see waitFor). */
  private readonly listeners = new Set<() => void>();

  private constructor(port: number) {
    this.port = port;
  }

  /** A sink on a free port; started unless `listening` is false (SMTP "down"). */
  static async create(listening = true): Promise<SmtpSink> {
    const sink = new SmtpSink(await freePort());
    if (listening) await sink.start();
    return sink;
  }

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ["STARTTLS"],
      logger: false,
      // stop() ends open connections (421) after this, as a restarting server does.
      closeTimeout: 100,
      onConnect: (_session, cb) => {
        this.connections++;
        cb();
      },
      onData: (stream, _session, cb) => {
        simpleParser(stream)
          .then((parsed) => {
            const mail = {
              to: (Array.isArray(parsed.to) ? parsed.to[0] : parsed.to)?.text ?? "",
              from: parsed.from?.text ?? "",
              subject: parsed.subject ?? "",
              text: parsed.text ?? "",
              html: typeof parsed.html === "string" ? parsed.html : "",
              messageId: parsed.messageId ?? "",
              raw: parsed,
            };
            const refusal = this.refuse?.(mail);
            if (refusal) throw Object.assign(new Error(refusal), { responseCode: 554 });
            this.mails.push(mail);
            for (const listener of [...this.listeners]) listener();
            return this.replyGate;
          })
          .then(() => cb())
          .catch(cb);
      },
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.port, "127.0.0.1", () => resolve());
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  mailsTo(address: string): ReceivedMail[] {
    return this.mails.filter((m) => m.to.toLowerCase() === address.toLowerCase());
  }

  /**
   * Resolves once `predicate` holds over the received mails, checking it as each mail
   * arrives (no polling); rejects after `timeoutMs`, saying how many mails there were.
   */
  waitFor(predicate: (mails: ReceivedMail[]) => boolean, timeoutMs = 15_000): Promise<void> {
    if (predicate(this.mails)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!predicate(this.mails)) return;
        done();
        resolve();
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for mail (have ${this.mails.length})`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
    });
  }

  /** The newest mail to `address`, once it has arrived. */
  async nextMailTo(address: string, after = 0, timeoutMs = 15_000): Promise<ReceivedMail> {
    await this.waitFor(() => this.mailsTo(address).length > after, timeoutMs);
    const list = this.mailsTo(address);
    return list[list.length - 1];
  }
}

/** The code in a code mail (the indented line of its text part). */
export function codeFrom(mail: ReceivedMail): string {
  const m = /^ {4}(\S+)$/m.exec(mail.text);
  if (!m) throw new Error(`no code in mail "${mail.subject}"`);
  return m[1];
}
