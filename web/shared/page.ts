// What the pages' scripts share: finding their elements, the status line, and the
// words for the errors any verification can meet.
import { Code, type CodegateError } from "@codegate/client/web";

/** The element with this id, if it is of this type. */
export function byId<T extends HTMLElement>(id: string, type: { new (): T }): T | undefined {
  const el = document.getElementById(id);
  return el instanceof type ? el : undefined;
}

/** Writes the page's status line (a polite live region), marked as an error, news or success. */
export function statusLine(status: HTMLElement): (message: string, kind: "error" | "info" | "success") => void {
  return (message, kind) => {
    status.textContent = message;
    status.dataset.kind = kind;
  };
}

/** The words for an error that means the same on every page; undefined for those each page words itself. */
export function commonMessage(err: CodegateError): string | undefined {
  switch (err.code) {
    case Code.ResourceExhausted:
      return "Too many attempts. Wait a few minutes, then try again.";
    case Code.Unavailable:
    case Code.DeadlineExceeded:
    case Code.Canceled:
      return "The server could not be reached. Check your connection and try again.";
    default:
      return undefined;
  }
}
