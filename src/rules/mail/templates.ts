// The mails, per purpose: a text and an HTML part with the organization's name,
// the code and how long it lives.

export type MailKind = "login" | "registration" | "recovery" | "already_registered" | "unknown_recovery";

export interface MailContent {
  subject: string;
  text: string;
  html: string;
}

export interface MailInput {
  orgName: string;
  /** Absent for the notices that carry no code. */
  code?: string;
  lifespanMs?: number;
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

export function humanDuration(ms: number): string {
  const units: [number, string][] = [
    [86_400_000, "day"],
    [3_600_000, "hour"],
    [60_000, "minute"],
    [1000, "second"],
  ];
  for (const [size, name] of units) {
    if (ms >= size && ms % size === 0) {
      const n = ms / size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  const minutes = Math.round(ms / 60_000);
  return minutes >= 1 ? `${minutes} minute${minutes === 1 ? "" : "s"}` : `${Math.round(ms / 1000)} seconds`;
}

const copy: Record<MailKind, { subject: (org: string) => string; lead: string; after: string }> = {
  login: {
    subject: (org) => `Your ${org} login code`,
    lead: "Use this code to log in:",
    after: "If you did not try to log in, you can ignore this mail.",
  },
  registration: {
    subject: (org) => `Complete your ${org} registration`,
    lead: "Use this code to complete your registration:",
    after: "If you did not sign up, you can ignore this mail.",
  },
  recovery: {
    subject: (org) => `Your ${org} account recovery code`,
    lead: "Use this code to recover your account:",
    after: "If you did not ask to recover your account, you can ignore this mail; your account is unchanged.",
  },
  already_registered: {
    subject: (org) => `You already have a ${org} account`,
    lead: "Someone, probably you, tried to sign up with this address, but it already has an account.",
    after: "You can log in as usual. If this was not you, you can ignore this mail.",
  },
  unknown_recovery: {
    subject: (org) => `${org} account access attempted`,
    lead: "Someone, probably you, tried to recover an account with this address, but there is no account for it.",
    after: "If this was not you, you can ignore this mail.",
  },
};

export function renderMail(kind: MailKind, input: MailInput): MailContent {
  const c = copy[kind];
  const subject = c.subject(input.orgName);
  const validity = input.lifespanMs ? `It is valid for ${humanDuration(input.lifespanMs)} and works once.` : "";
  const text = [c.lead, "", ...(input.code ? [`    ${input.code}`, "", validity, ""] : []), c.after, "", `— ${input.orgName}`, ""].join("\n");
  const org = escapeHtml(input.orgName);
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head>
<body style="font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1a1a1a;max-width:32rem;margin:2rem auto;padding:0 1rem">
<p>${escapeHtml(c.lead)}</p>
${input.code ? `<p style="font-size:2rem;font-weight:600;letter-spacing:.3rem;font-family:ui-monospace,monospace">${escapeHtml(input.code)}</p>\n<p>${escapeHtml(validity)}</p>` : ""}
<p style="color:#555">${escapeHtml(c.after)}</p>
<p style="color:#555">— ${org}</p>
</body></html>
`;
  return { subject, text, html };
}
