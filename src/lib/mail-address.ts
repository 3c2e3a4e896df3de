// A mail address as an SMTP server takes it.
import { domainToASCII } from "node:url";

/**
 * An addr-spec as a mail server takes it: the domain as an A-label (IDNA), the
 * local part as given. Anything that is not one plain local@domain (spaces,
 * brackets, quotes, control characters, an empty part) is refused with an Error.
 */
export function mailAddress(address: string): string {
  const at = address.lastIndexOf("@");
  const local = address.slice(0, at);
  const domain = at < 1 ? "" : domainToASCII(address.slice(at + 1));
  if (!domain || /[\s<>()[\],;:\\"\x00-\x1f\x7f]/.test(local) || local.length > 64) {
    throw new Error("not a mail address");
  }
  return `${local}@${domain}`;
}
