// The page of the link mailed beside a code (settings.mail_links):
// `/verify#purpose=…&org=…&username=…&code=…[&state=…]`. Everything is in the
// fragment, which the browser never sends here, so the HTML is the same for
// every link and the code reaches no access log. The page's script
// (web/verify/, bundled into dist/web/ by scripts/build-web.ts) reads the
// fragment, takes it out of the address bar, and verifies the code through the
// purpose's RPC (VerifyLoginCode, CompleteRegistration, VerifyRecoveryCode) over
// Connect JSON only when the user clicks: a mail scanner that opens links spends
// nothing. It then hands the proof token to the return URL that the answer names
// (the organization's settings.return_url), in that URL's fragment.
import type { HttpRoute } from "./http-routes.ts";
import { bundleRoutes, pageDocument, sendPage, WEB_DIST } from "./pages.ts";

const PAGE = pageDocument("Confirm with your code", "verify", `
    <h1 id="title">Confirm with your code</h1>
    <p class="lead" id="lead">Checking your link…</p>
    <form id="verify-form" method="post" action="/verify" hidden aria-labelledby="title">
      <p class="who">For <strong id="username"></strong></p>
      <button id="submit" type="submit" disabled>Continue</button>
      <p class="help" id="help">The code in your mail works once, typed or through this link.</p>
    </form>
    <section id="done" class="done" hidden aria-labelledby="done-title">
      <h2 id="done-title" tabindex="-1">Done</h2>
      <p id="done-text">You can close this page and go back to the application.</p>
    </section>
    <div id="broken" class="notice" role="alert" hidden>
      <p><strong>This link is incomplete.</strong></p>
      <p>Open the link from your mail again, exactly as it was sent. If it still does not work,
        ask the application for a new code.</p>
    </div>
    <p id="status" class="status" role="status" aria-live="polite" aria-atomic="true"></p>
    <noscript><p class="notice">This page needs JavaScript to check your code. Turn it on and open the link again.</p></noscript>`);

/** The page's routes, for httpRouter; reads the built bundle once, at start. */
export function verifyPageRoutes(distDir: string = WEB_DIST): Record<string, HttpRoute> {
  return {
    ...bundleRoutes("verify", distDir),
    "GET /verify": (_req, res) => sendPage(res, 200, PAGE),
  };
}
