// The recovery page in the browser: sends the code the user types, with the flow
// id of the administrator's link, to RecoveryService.VerifyRecoveryCode over
// Connect JSON (the client package, clients/ts), and says what happened; when the
// organization has a return URL, hands it the proof token (../shared/hand-off.ts).
// The server renders the page (and the message for a link without a flow); this
// only drives the form.
import { Code, codegateError, createCodegateWebClients, type CodegateError } from "@codegate/client/web";
import { handOff } from "../shared/hand-off.ts";
import { byId, commonMessage, statusLine } from "../shared/page.ts";

const MAX_CODE_LENGTH = 64; // VerifyRecoveryCodeRequest.code max_len

const client = createCodegateWebClients({ baseUrl: location.origin, useBinaryFormat: false }).recovery;

const form = byId("recovery-form", HTMLFormElement);
const input = byId("code", HTMLInputElement);
const button = byId("submit", HTMLButtonElement);
const status = byId("status", HTMLElement);
const done = byId("done", HTMLElement);
const doneHeading = byId("done-title", HTMLElement);
const lead = byId("lead", HTMLElement);

if (form && input && button && status && done && doneHeading) {
  const flowId = new URLSearchParams(location.search).get("flow") ?? "";
  const idle = button.textContent ?? "Recover account";
  let busy = false;

  const say = statusLine(status);
  const fail = (message: string) => {
    say(message, "error");
    input.setAttribute("aria-invalid", "true");
    input.focus();
    input.select();
  };

  input.addEventListener("input", () => {
    if (input.getAttribute("aria-invalid")) {
      input.removeAttribute("aria-invalid");
      say("", "info");
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    // People copy codes with spaces or line breaks around and inside them.
    const code = input.value.replace(/\s+/g, "");
    if (!code) return fail("Enter the recovery code your administrator gave you.");
    if (code.length > MAX_CODE_LENGTH) return fail(`A recovery code has at most ${MAX_CODE_LENGTH} characters. Check what you typed.`);

    busy = true;
    button.disabled = true;
    button.textContent = "Checking…";
    form.setAttribute("aria-busy", "true");
    say("Checking your code…", "info");
    try {
      // The server bounds the call itself (RPC_TIMEOUT); this only keeps the page
      // from waiting forever on a dead connection.
      const answer = await client.verifyRecoveryCode({ flowId, code }, { signal: AbortSignal.timeout(30_000) });
      form.hidden = true;
      // To the organization's return URL, in its fragment; without one the token
      // stays in this page (not in a URL, a log or storage).
      if (answer.returnUrl && handOff(answer.returnUrl, { token: answer.token, purpose: "recovery" })) {
        if (lead) lead.hidden = true;
        say("Your account is recovered. Taking you back to the application…", "info");
        return;
      }
      if (lead) lead.hidden = true;
      done.hidden = false;
      say("Your account is recovered.", "success");
      doneHeading.focus();
    } catch (err) {
      fail(messageFor(codegateError(err)));
    } finally {
      busy = false;
      button.disabled = false;
      button.textContent = idle;
      form.removeAttribute("aria-busy");
    }
  });

  button.disabled = false;
}

function messageFor(err: CodegateError): string {
  switch (err.code) {
    case Code.Unauthenticated:
      return "That code did not work: it is wrong, expired or already used. Check it and try again, or ask your administrator for a new recovery code.";
    case Code.InvalidArgument:
      return `That does not look like a recovery code. Type the code exactly as your administrator gave it to you (letters and digits, at most ${MAX_CODE_LENGTH}).`;
    default:
      return commonMessage(err) ?? "Something went wrong on our side. Try again in a moment; if it keeps failing, contact your administrator.";
  }
}
