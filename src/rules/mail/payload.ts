// What the outbox holds of a mail, sealed (seal.ts): the envelope sender on a
// first line, then the message as mime.ts built it. Rows queued by versions
// before that hold the mail's parts as one line of JSON; they are built into a
// message when sent, so that a deploy delivers what its predecessor queued.
import { buildMessage } from "./mime.ts";

/** A mail as the courier sends it: SMTP's MAIL FROM and the message but its To header. */
export interface OutboxMail {
  from: string;
  message: Buffer;
  /** The W3C traceparent of the call that queued it, when that call was traced: its delivery continues the trace. */
  trace?: string;
}

/** `message` as buildMessageText wrote it. */
export function encodeMail(mail: Omit<OutboxMail, "message"> & { message: string }): string {
  return `${JSON.stringify({ v: 2, from: mail.from, ...(mail.trace ? { trace: mail.trace } : {}) })}\n${mail.message}`;
}

/** A short text (the `sms` channel's: the code only), as the outbox holds it. */
export function encodeText(text: string): string {
  return `${JSON.stringify({ v: 3, kind: "text" })}\n${text}`;
}

/** What the delivery API hands out: a mail, or a text. */
export type OutboxContent = { kind: "mail"; mail: OutboxMail } | { kind: "text"; text: string };

export function decodeContent(plain: string, id: string, now: Date): OutboxContent {
  const newline = plain.indexOf("\n");
  if (newline >= 0 && (JSON.parse(plain.slice(0, newline)) as { v: number }).v === 3) return { kind: "text", text: plain.slice(newline + 1) };
  return { kind: "mail", mail: decodeMail(plain, id, now) };
}

interface LegacyMail {
  from: string;
  subject: string;
  text: string;
  html: string;
}

/** `id`: the outbox row's; `now`: the Date of a message built from a legacy row. */
export function decodeMail(plain: string, id: string, now: Date): OutboxMail {
  const newline = plain.indexOf("\n");
  if (newline >= 0) {
    const meta = JSON.parse(plain.slice(0, newline)) as { v: number; from: string; trace?: string };
    if (meta.v !== 2) throw new Error(`outbox format ${meta.v} is not a mail`);
    return { from: meta.from, message: Buffer.from(plain.slice(newline + 1), "utf8"), trace: meta.trace };
  }
  const legacy = JSON.parse(plain) as LegacyMail;
  // Written as `"name" <address>` by the versions that queued it.
  const from = /^"(.*)" <([^<>]+)>$/.exec(legacy.from) ?? ["", "", legacy.from];
  return {
    from: from[2],
    message: buildMessage({ id, date: now, from: { name: from[1], address: from[2] }, subject: legacy.subject, text: legacy.text, html: legacy.html }),
  };
}
