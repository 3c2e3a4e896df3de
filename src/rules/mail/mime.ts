// A mail as the bytes an SMTP server receives (RFC 5322 with MIME), built once,
// when its code is issued, and sealed in the outbox as it is: the courier then
// only sends it. Composing a mail with nodemailer's MailComposer cost about
// 0.8 ms of CPU per mail (bench/micro-mail.ts); these mails have one shape (a
// text and an HTML part), built here in a few microseconds with nodemailer's
// own encoders for quoted-printable and RFC 2047 encoded words.
import { encodeWord, encodeWords, foldLines, quoteString } from "nodemailer/lib/mime-funcs";
import { encode as qpEncode, wrap as qpWrap } from "nodemailer/lib/qp";
import { mailAddress } from "../../lib/mail-address.ts";

export interface MailMessage {
  /** The outbox row's id: the Message-ID, and the MIME boundary's unique part. */
  id: string;
  date: Date;
  from: { name: string; address: string };
  subject: string;
  text: string;
  html: string;
}

const CRLF = "\r\n";

/** Header text never carries a line break of its own: a CR or LF would start a header the sender did not write. */
const oneLine = (s: string) => s.replace(/[\r\n\t]+/g, " ");

/** A display name as a phrase: as it is, quoted, or as encoded words. */
function displayName(name: string): string {
  const n = oneLine(name);
  if (/^[\w ]*$/.test(n)) return n;
  if (/^[\x20-\x7e]*$/.test(n)) return quoteString(n);
  return encodeWord(n, "Q", 52);
}

/** An RFC 5322 date: "Mon, 30 Nov 2026 20:30:00 +0000". */
const rfc5322Date = (d: Date) => d.toUTCString().replace(/GMT$/, "+0000");

const part = (type: string, body: string) =>
  `Content-Type: ${type}; charset=utf-8${CRLF}Content-Transfer-Encoding: quoted-printable${CRLF}${CRLF}${qpWrap(qpEncode(body.replace(/\r?\n/g, CRLF)), 76)}${CRLF}`;

/**
 * The message but its To header, which the courier adds from the outbox row
 * (withRecipient): a send learns which identity, and so which address, it
 * mails only in the statement that queues the mail.
 */
export function buildMessage(m: MailMessage): Buffer {
  const boundary = `cg-${m.id}`;
  const headers = [
    foldLines(`From: ${displayName(m.from.name)} <${mailAddress(m.from.address)}>`, 76),
    foldLines(`Subject: ${encodeWords(oneLine(m.subject), "Q", 52)}`, 76),
    `Date: ${rfc5322Date(m.date)}`,
    `Message-ID: <${m.id}@codegate>`,
    "MIME-Version: 1.0",
    `Content-Type: multipart/alternative;${CRLF} boundary="${boundary}"`,
  ];
  return Buffer.from(
    headers.join(CRLF) +
      CRLF +
      CRLF +
      `--${boundary}${CRLF}${part("text/plain", m.text)}` +
      `--${boundary}${CRLF}${part("text/html", m.html)}` +
      `--${boundary}--${CRLF}`,
  );
}

/** The message ready for SMTP DATA (dot-stuffing is the SMTP client's): its To header first. */
export function withRecipient(message: Buffer, to: string): Buffer {
  let address: string;
  try {
    address = mailAddress(to);
  } catch {
    throw new Error("the recipient is not a mail address");
  }
  return Buffer.concat([Buffer.from(`To: ${address}${CRLF}`), message]);
}
