// Where mails go: an SMTP server (pooled connections) when SMTP_URL is set,
// otherwise .eml files under DATA_DIR/mail, so the embedded default works offline.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import nodemailer from "nodemailer";
import type { Config } from "../../config/config.ts";

export interface OutgoingMail {
  messageId: string;
  from: string;
  to: string;
  subject: string;
  text: string;
  html: string;
}

export interface MailTransport {
  /** Resolves once the mail is accepted; rejects with a reason safe to store. */
  send(mail: OutgoingMail): Promise<void>;
  close(): void;
  /** Where mail goes, for the log; never with credentials. */
  readonly destination: string;
}

export function createMailTransport(config: Pick<Config, "smtpUrl" | "dataDir">): MailTransport {
  const url = config.smtpUrl;
  if (!url) return emlTransport(join(config.dataDir, "mail"));
  const transporter = nodemailer.createTransport({
    pool: true,
    maxConnections: 8,
    maxMessages: Infinity,
    host: url.hostname,
    port: url.port ? Number(url.port) : url.protocol === "smtps:" ? 465 : 587,
    secure: url.protocol === "smtps:",
    auth: url.username ? { user: decodeURIComponent(url.username), pass: decodeURIComponent(url.password) } : undefined,
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 30_000,
  });
  return {
    destination: `smtp ${url.hostname}:${url.port || (url.protocol === "smtps:" ? 465 : 587)}`,
    async send(mail) {
      await transporter.sendMail({ ...mail, messageId: `<${mail.messageId}@codegate>` });
    },
    close: () => transporter.close(),
  };
}

function emlTransport(dir: string): MailTransport {
  const transporter = nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "unix" });
  let made = false;
  return {
    destination: `.eml files in ${dir}`,
    async send(mail) {
      const info = await transporter.sendMail({ ...mail, messageId: `<${mail.messageId}@codegate>` });
      if (!made) mkdirSync(dir, { recursive: true, mode: 0o700 }), (made = true);
      writeFileSync(join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}-${mail.messageId}.eml`), info.message as Buffer, {
        mode: 0o600,
      });
    },
    close: () => transporter.close(),
  };
}
