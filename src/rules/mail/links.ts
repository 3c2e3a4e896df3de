// The link beside a code (settings.mail_links): it opens this service's page
// `/verify`, which verifies the code from the browser and hands the proof token
// to the organization's return URL. Everything the page needs is in the URL's
// fragment, which browsers never send to a server: the code is not in any
// server's access log, nor in a Referer.
import type { Org } from "../../domain/organization.ts";
import type { Purpose } from "../../domain/purpose.ts";

/** Who the link is for: the organization, the username the code was sent to, and the application's `state`, handed back beside the token. */
export interface LinkTarget {
  orgId: string;
  username: string;
  state?: string;
}

export const VERIFY_PAGE_PATH = "/verify";

export function codeLink(publicUrl: string, purpose: Purpose, target: LinkTarget, code: string): string {
  const fragment = new URLSearchParams({ purpose, org: target.orgId, username: target.username, code });
  if (target.state) fragment.set("state", target.state);
  return `${publicUrl}${VERIFY_PAGE_PATH}#${fragment}`;
}

/**
 * The link of a send, if it gets one: the organization mails links for the
 * purpose and has a return URL, and the code is not bound to an application's
 * flow (the page could not present that flow's binding: such a code is typed
 * into the application that holds it). Decided from the request and the
 * organization only, never from the account.
 */
export function linkTarget(org: Org, purpose: Purpose, send: { username: string; binding?: string; state?: string }): LinkTarget | undefined {
  if (org.settings.mailLinks?.[purpose] !== true || !org.settings.returnUrl || send.binding) return undefined;
  return { orgId: org.id, username: send.username.trim(), state: send.state || undefined };
}
