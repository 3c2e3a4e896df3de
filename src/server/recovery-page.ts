// The recovery page of an administrator's recovery link (`/recovery?flow=<id>`):
// the user types the code the administrator gave them, and the page's script
// (web/recovery/) verifies it through RecoveryService.VerifyRecoveryCode.
import type { Config } from "../config/config.ts";
import type { HttpRoute } from "./http-routes.ts";
import { bundleRoutes, pageDocument, sendPage, WEB_DIST } from "./pages.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The page for a link with a flow id: the code form, empty. */
function formPage(numeric: boolean): string {
  return pageDocument("Recover your account", "recovery", `
    <h1 id="title">Recover your account</h1>
    <p class="lead" id="lead">Enter the recovery code your administrator gave you.</p>
    <form id="recovery-form" method="post" action="/recovery" novalidate aria-labelledby="title">
      <label for="code">Recovery code</label>
      <input id="code" name="code" type="text" value="" required maxlength="64"
        autocomplete="one-time-code" inputmode="${numeric ? "numeric" : "text"}"
        autocapitalize="off" autocorrect="off" spellcheck="false"
        aria-describedby="lead code-help status">
      <p class="help" id="code-help">Spaces do not matter. A code works once, for a limited time.</p>
      <button id="submit" type="submit" disabled>Recover account</button>
    </form>
    <section id="done" class="done" hidden aria-labelledby="done-title">
      <h2 id="done-title" tabindex="-1">Your account is recovered</h2>
      <p>You can close this page and go back to the application.</p>
    </section>
    <p id="status" class="status" role="status" aria-live="polite" aria-atomic="true"></p>
    <noscript><p class="notice">This page needs JavaScript to check your code. Turn it on and reload the page.</p></noscript>`);
}

/** The page for a link without a (well-formed) flow id: nothing to type a code for. */
function brokenLinkPage(): string {
  return pageDocument("Recover your account", "recovery", `
    <h1 id="title">Recover your account</h1>
    <div class="notice" role="alert">
      <p><strong>This recovery link is incomplete.</strong></p>
      <p>Open the link exactly as your administrator sent it: it ends with
        <code>/recovery?flow=</code> and a long identifier. If it still does not work,
        ask your administrator for a new recovery code and link.</p>
    </div>`);
}

/**
 * The page's routes, for httpRouter. Reads the built bundle once, at start, and
 * fails with a clear message when it is missing.
 */
export function recoveryPageRoutes(config: Pick<Config, "codes">, distDir: string = WEB_DIST): Record<string, HttpRoute> {
  const numeric = /^[0-9]+$/.test(config.codes.recovery.alphabet);
  const withFlow = formPage(numeric);
  const withoutFlow = brokenLinkPage();
  return {
    ...bundleRoutes("recovery", distDir),
    "GET /recovery": (_req, res, url) => {
      const ok = UUID.test(url.searchParams.get("flow") ?? "");
      sendPage(res, ok ? 200 : 400, ok ? withFlow : withoutFlow);
    },
  };
}
