import { invalidArgument } from "./errors.ts";

export const DEFAULT_PAGE_SIZE = 50;

export interface Cursor {
  createdAt: Date;
  id: string;
}

/** An opaque token for the position after `last`. */
export function encodePageToken(last: Cursor): string {
  return Buffer.from(JSON.stringify([last.createdAt.toISOString(), last.id])).toString("base64url");
}

/** What a cursor's id looks like in each listing: a token is checked against it before it reaches SQL. */
export const CURSOR_IDS = {
  uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
  organization: /^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$/,
} as const;

/** A time as `encodePageToken` writes it, in the years 1 to 9999 (PostgreSQL has no year 0, nor six-digit years). */
const CURSOR_TIME = /^(?!0000)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * The position a token names, for a listing whose ids look like `ids`. A token this
 * server did not write (a forged id, a time PostgreSQL cannot hold) is the caller's
 * `invalid_argument`, never a statement that fails.
 */
export function decodePageToken(token: string, ids: RegExp): Cursor | undefined {
  if (token === "") return undefined;
  try {
    const decoded: unknown = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
    if (!Array.isArray(decoded) || decoded.length !== 2) throw new Error();
    const [at, id] = decoded as unknown[];
    if (typeof at !== "string" || !CURSOR_TIME.test(at) || typeof id !== "string" || !ids.test(id)) throw new Error();
    const createdAt = new Date(at);
    // A date that does not exist (month 13, 31 April) comes back as another.
    if (Number.isNaN(createdAt.getTime()) || createdAt.toISOString() !== at) throw new Error();
    return { createdAt, id };
  } catch {
    throw invalidArgument("page_token", "the next_page_token of an earlier answer, or empty for the first page");
  }
}

/** Splits a page fetched with one extra row into the page and the next token. */
export function pageOf<T extends Cursor>(rows: T[], size: number): { items: T[]; next: string } {
  if (rows.length <= size) return { items: rows, next: "" };
  const items = rows.slice(0, size);
  return { items, next: encodePageToken(items[items.length - 1]) };
}
