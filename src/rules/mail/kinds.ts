// The mails Codegate writes, and the variables each kind's templates may use.
import type { Purpose } from "../../domain/purpose.ts";

export type MailKind = "login" | "registration" | "recovery" | "already_registered" | "unknown_recovery";

export const mailKinds: readonly MailKind[] = ["login", "registration", "recovery", "already_registered", "unknown_recovery"];

/** The purpose of the code a kind carries; undefined for the notices, which carry none. */
export function purposeOfKind(kind: MailKind): Purpose | undefined {
  return kind === "login" || kind === "registration" || kind === "recovery" ? kind : undefined;
}

/**
 * The documented variables, and nothing else, per kind:
 * - `org_name`: the organization's name (every kind);
 * - `code`: the code (the mails of a code);
 * - `lifespan`: how long the code lives, in words of the mail's locale ("10 minutes");
 * - `link`: the link beside the code (settings.mail_links), empty when there is none.
 */
export function variablesOf(kind: MailKind): ReadonlySet<string> {
  return purposeOfKind(kind) ? CODE_VARIABLES : NOTICE_VARIABLES;
}

const CODE_VARIABLES: ReadonlySet<string> = new Set(["org_name", "code", "lifespan", "link"]);
const NOTICE_VARIABLES: ReadonlySet<string> = new Set(["org_name"]);

/**
 * What a subject may not use: it is kept in plain text beside the sealed mail
 * (the outbox's `subject`, listed by ListCourierMessages), and a code or the link
 * (which holds the code) must never be stored in plain text.
 */
export const SECRET_VARIABLES: ReadonlySet<string> = new Set(["code", "link"]);
