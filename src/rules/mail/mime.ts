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
  /**
   * Set when the mail is one of many alike: those of one template, which differ
   * only in `code` (none for a notice). Their parts' encoding is kept for the
   * next. Unset, the mail is its recipient's own (a link names them): encoded
   * whole, nothing of it kept.
   */
  shared?: { code?: string };
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

const quotedPrintable = (text: string) => qpWrap(qpEncode(text), 76);

// Quoted-printable encoding was most of a message's cost (bench/micro-send.ts),
// and the mails of one template differ only in their code: a part is encoded
// once with its code replaced by a run of PLACEHOLDER as long, and the code put
// back into the encoded text. That text is what encoding the part itself gives
// when the code and the placeholder are encoded alike, character for character,
// and at the same places: both are literal in quoted-printable, neither is
// whitespace, a line break or one of the characters wrap() breaks lines at or
// treats as part of an escape (=); and wrap() broke no placeholder with a soft
// line break (counted). A part that has the placeholder character of its own is
// encoded whole, every time. Parts without a code (notices) are cached as they are.
const PLACEHOLDER = "~";
const CODE_ALIKE = /^[A-Za-z0-9-]+$/;
/**
 * Encoded parts by the length of their code (0: none) and their text with the
 * code taken out; null: such a part cannot be kept so, encode it whole. Equal
 * texts around codes of different lengths are different parts: the placeholders
 * a wrap() breaks in one it may not break in the other.
 */
const encodedParts = new Map<string, string | null>();
/** Characters held by encodedParts, kept under PARTS_BUDGET by dropping the oldest. */
let partsHeld = 0;
const PARTS_BUDGET = 4 << 20;

function encodedPart(text: string, shared: MailMessage["shared"]): string {
  if (shared === undefined) return quotedPrintable(text);
  const { code } = shared;
  if (code === undefined) return remembered(text, "") ?? quotedPrintable(text);
  if (!CODE_ALIKE.test(code) || text.includes(PLACEHOLDER)) return quotedPrintable(text);
  const placeholder = PLACEHOLDER.repeat(code.length);
  const encoded = remembered(text.replaceAll(code, placeholder), placeholder);
  return encoded === null ? quotedPrintable(text) : encoded.replaceAll(placeholder, code);
}

/** The encoding of `shape`, kept; null when wrap() broke one of its placeholders. */
function remembered(shape: string, placeholder: string): string | null {
  const key = `${placeholder.length}:${shape}`;
  let encoded = encodedParts.get(key);
  if (encoded === undefined) {
    const whole = quotedPrintable(shape);
    encoded = placeholder === "" || whole.split(placeholder).length === shape.split(placeholder).length ? whole : null;
    while (partsHeld + key.length + (encoded?.length ?? 0) > PARTS_BUDGET && encodedParts.size > 0) {
      const [oldest, value] = encodedParts.entries().next().value!;
      encodedParts.delete(oldest);
      partsHeld -= oldest.length + (value?.length ?? 0);
    }
    encodedParts.set(key, encoded);
    partsHeld += key.length + (encoded?.length ?? 0);
  }
  return encoded;
}

const part = (type: string, body: string, shared: MailMessage["shared"]) =>
  `Content-Type: ${type}; charset=utf-8${CRLF}Content-Transfer-Encoding: quoted-printable${CRLF}${CRLF}${encodedPart(body.replace(/\r?\n/g, CRLF), shared)}${CRLF}`;

/**
 * The message (its text: buildMessage gives its bytes) but its To header, which the courier adds from the outbox row
 * (withRecipient): a send learns which identity, and so which address, it
 * mails only in the statement that queues the mail.
 */
export function buildMessageText(m: MailMessage): string {
  const boundary = `cg-${m.id}`;
  const headers = [
    foldLines(`From: ${displayName(m.from.name)} <${mailAddress(m.from.address)}>`, 76),
    foldLines(`Subject: ${encodeWords(oneLine(m.subject), "Q", 52)}`, 76),
    `Date: ${rfc5322Date(m.date)}`,
    `Message-ID: <${m.id}@codegate>`,
    "MIME-Version: 1.0",
    `Content-Type: multipart/alternative;${CRLF} boundary="${boundary}"`,
  ];
  return (
    headers.join(CRLF) +
    CRLF +
    CRLF +
    `--${boundary}${CRLF}${part("text/plain", m.text, m.shared)}` +
    `--${boundary}${CRLF}${part("text/html", m.html, m.shared)}` +
    `--${boundary}--${CRLF}`
  );
}

export const buildMessage = (m: MailMessage): Buffer => Buffer.from(buildMessageText(m));

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
