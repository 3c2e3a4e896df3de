// The page of the link mailed beside a code (src/server/verify-page.ts): reads
// what the link carries from the URL's fragment (purpose, organization,
// username, code, and the application's state), takes it out of the address bar
// at once, and on the user's click verifies the code through the purpose's RPC
// over Connect JSON (the client package, clients/ts). On success it hands the
// proof token to the return URL of the answer (../shared/hand-off.ts). Nothing
// runs before the click: a mail scanner that opens the link spends no code.
import { Code, codegateError, createCodegateWebClients, type CodegateError } from "@codegate/client/web";
import { handOff } from "../shared/hand-off.ts";
import { byId, commonMessage, statusLine } from "../shared/page.ts";

const MAX_CODE_LENGTH = 64; // the verify requests' code max_len
const ORG_ID = /^or-[a-z0-9]{5}-[a-z0-9]{5}-[a-z0-9]{14,17}$/;
const STATE = /^[A-Za-z0-9._~-]{0,256}$/;

type Purpose = "login" | "registration" | "recovery";
const words: Record<Purpose, { title: string; lead: string; button: string; done: string; doneText: string; handing: string }> = {
  login: {
    title: "Log in",
    lead: "Continue to log in with the code from your mail.",
    button: "Log in",
    done: "You are logged in",
    doneText: "You can close this page and go back to the application.",
    handing: "You are logged in. Taking you back to the application…",
  },
  registration: {
    title: "Complete your registration",
    lead: "Continue to complete your registration with the code from your mail.",
    button: "Complete registration",
    done: "Your registration is complete",
    doneText: "You can close this page and go back to the application.",
    handing: "Your registration is complete. Taking you back to the application…",
  },
  recovery: {
    title: "Recover your account",
    lead: "Continue to recover your account with the code from your mail.",
    button: "Recover account",
    done: "Your account is recovered",
    doneText: "You can close this page and go back to the application.",
    handing: "Your account is recovered. Taking you back to the application…",
  },
};

const link = new URLSearchParams(location.hash.slice(1));
// The fragment holds a live code: out of the address bar, the history and any bookmark.
if (location.hash) history.replaceState(null, "", location.pathname + location.search);

const purpose = link.get("purpose") as Purpose | null;
const orgId = link.get("org") ?? "";
const username = (link.get("username") ?? "").trim();
const code = (link.get("code") ?? "").replace(/\s+/g, "");
const state = link.get("state") ?? "";
const complete =
  purpose !== null && Object.hasOwn(words, purpose) && ORG_ID.test(orgId) && username.length > 0 && username.length <= 254 &&
  code.length > 0 && code.length <= MAX_CODE_LENGTH && STATE.test(state);

const title = byId("title", HTMLElement);
const lead = byId("lead", HTMLElement);
const form = byId("verify-form", HTMLFormElement);
const who = byId("username", HTMLElement);
const button = byId("submit", HTMLButtonElement);
const status = byId("status", HTMLElement);
const done = byId("done", HTMLElement);
const doneTitle = byId("done-title", HTMLElement);
const doneText = byId("done-text", HTMLElement);
const broken = byId("broken", HTMLElement);

if (title && lead && form && who && button && status && done && doneTitle && doneText && broken) {
  if (!complete || purpose === null) {
    lead.hidden = true;
    broken.hidden = false;
  } else {
    const w = words[purpose];
    const clients = createCodegateWebClients({ baseUrl: location.origin, useBinaryFormat: false });
    const verify = async (signal: AbortSignal) => {
      const req = { username, orgId, code };
      if (purpose === "login") return clients.login.verifyLoginCode(req, { signal });
      if (purpose === "registration") return clients.registration.completeRegistration(req, { signal });
      return clients.recovery.verifyRecoveryCode(req, { signal });
    };
    const say = statusLine(status);

    document.title = w.title;
    title.textContent = w.title;
    lead.textContent = w.lead;
    who.textContent = username;
    button.textContent = w.button;
    form.hidden = false;
    let busy = false;

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      busy = true;
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      say("Checking your code…", "info");
      try {
        // The server bounds the call (RPC_TIMEOUT); this only keeps the page from waiting on a dead connection.
        const answer = await verify(AbortSignal.timeout(30_000));
        form.hidden = true;
        lead.hidden = true;
        const fields: Record<string, string> = { token: answer.token, purpose };
        if (state) fields.state = state;
        if (answer.returnUrl && handOff(answer.returnUrl, fields)) {
          say(w.handing, "info");
          return;
        }
        // No return URL: the token stays in this page (not in a URL, a log or storage).
        doneTitle.textContent = w.done;
        doneText.textContent = w.doneText;
        done.hidden = false;
        say(`${w.done}.`, "success");
        doneTitle.focus();
      } catch (err) {
        say(messageFor(codegateError(err)), "error");
        button.disabled = false;
        button.focus();
      } finally {
        busy = false;
        form.removeAttribute("aria-busy");
      }
    });
    button.disabled = false;
  }
}

function messageFor(err: CodegateError): string {
  switch (err.code) {
    case Code.Unauthenticated:
      return "This link did not work: its code has expired or was already used (a code works once, typed or through its link). Ask the application for a new code.";
    case Code.InvalidArgument:
      return "This link is damaged. Open it again from your mail, exactly as it was sent, or ask the application for a new code.";
    default:
      return commonMessage(err) ?? "Something went wrong on our side. Try again in a moment.";
  }
}
