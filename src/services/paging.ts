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

export function decodePageToken(token: string): Cursor | undefined {
  if (token === "") return undefined;
  try {
    const [at, id] = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as [string, string];
    const createdAt = new Date(at);
    if (typeof id !== "string" || Number.isNaN(createdAt.getTime())) throw new Error();
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
