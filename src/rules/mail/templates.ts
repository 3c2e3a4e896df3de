// The mails, per kind and locale: a subject, a text and an HTML part, written
// in the template language (template-language.ts) with the documented variables
// of their kind (kinds.ts). The built-in templates come in the locales of
// builtin-locales.ts; an organization may override any kind in any locale
// (org-templates.ts), and its templates are compiled, and so checked, here.
import { InvalidArgument } from "../../domain/errors.ts";
import { builtinPhrases, type LocalePhrases } from "./builtin-locales.ts";
import { purposeOfKind, SECRET_VARIABLES, variablesOf, type MailKind } from "./kinds.ts";
import { formatLifespan } from "./locales.ts";
import { compileTemplate, escapeHtml, renderTemplate, TemplateError, usesAtTopLevel, verbatim, type Segment } from "./template-language.ts";

export { mailKinds, type MailKind } from "./kinds.ts";

export interface MailContent {
  subject: string;
  text: string;
  html: string;
}

/** A template as it is written (and stored). */
export interface TemplateSource {
  subject: string;
  text: string;
  html: string;
}

export type TemplateOrigin = "built-in" | "organization" | "draft";

export interface CompiledTemplate {
  kind: MailKind;
  /** Canonical BCP 47 tag. */
  locale: string;
  origin: TemplateOrigin;
  source: TemplateSource;
  subject: Segment[];
  text: Segment[];
  html: Segment[];
}

/** The values of a mail's variables (see kinds.ts). */
export interface MailValues {
  orgName: string;
  code?: string;
  lifespanMs?: number;
  /** The link beside the code; absent when there is none. */
  link?: string;
}

const allExcept = (set: ReadonlySet<string>, out: ReadonlySet<string>) => new Set([...set].filter((v) => !out.has(v)));

/**
 * Compiles a template of `kind`, checking what a mail needs: only the kind's
 * variables, no code or link in the subject, and the code in both parts of a
 * code's mail. Throws InvalidArgument naming the part (`subject`, `text`, `html`).
 */
export function compileMailTemplate(kind: MailKind, locale: string, source: TemplateSource, origin: TemplateOrigin): CompiledTemplate {
  const variables = variablesOf(kind);
  const part = (field: keyof TemplateSource, allowed: ReadonlySet<string>): Segment[] => {
    try {
      return compileTemplate(source[field], allowed);
    } catch (err) {
      if (!(err instanceof TemplateError)) throw err;
      const secret = field === "subject" && [...SECRET_VARIABLES].some((v) => new RegExp(`\\{\\{\\s*[#^/]?\\s*${v}\\s*\\}\\}`).test(source.subject));
      throw new InvalidArgument(
        field,
        secret ? "the subject must not use {{code}} or {{link}}: it is kept in plain text beside the sealed mail, and a code never is" : err.message,
      );
    }
  };
  if (/[\r\n]/.test(source.subject)) throw new InvalidArgument("subject", "one line, without line breaks");
  const compiled: CompiledTemplate = {
    kind,
    locale,
    origin,
    source,
    subject: part("subject", allExcept(variables, SECRET_VARIABLES)),
    text: part("text", variables),
    html: part("html", variables),
  };
  if (purposeOfKind(kind)) {
    for (const field of ["text", "html"] as const) {
      if (!usesAtTopLevel(compiled[field], "code")) throw new InvalidArgument(field, "a code's mail shows {{code}}, outside of any {{#…}} or {{^…}} section");
    }
  }
  return compiled;
}

/** A compiled template with these values: variables HTML-escaped in the HTML part only. */
export function renderCompiled(t: CompiledTemplate, v: MailValues): MailContent {
  const values = new Map<string, string>([["org_name", v.orgName]]);
  if (purposeOfKind(t.kind)) {
    values.set("code", v.code ?? "");
    values.set("lifespan", v.lifespanMs ? formatLifespan(v.lifespanMs, t.locale) : "");
    values.set("link", v.link ?? "");
  }
  return {
    subject: renderTemplate(t.subject, values, verbatim),
    text: renderTemplate(t.text, values, verbatim),
    html: renderTemplate(t.html, values, escapeHtml),
  };
}

// The built-in layout. `lead`, `after` and the rest are our own words, with
// {{org_name}} and {{lifespan}} in them: HTML-escaped as text, their variables kept.
function builtinSource(kind: MailKind, locale: string, words: LocalePhrases): TemplateSource {
  const w = words.kinds[kind];
  const purpose = purposeOfKind(kind);
  const h = escapeHtml;
  const text = purpose
    ? [w.lead, "", "    {{code}}", "", words.validity, "", `{{#link}}${words.linkLead}`, "{{link}}", "", `{{/link}}${w.after}`, "", "— {{org_name}}", ""]
    : [w.lead, "", w.after, "", "— {{org_name}}", ""];
  const html = `<!doctype html>
<html lang="${h(locale)}"><head><meta charset="utf-8"><title>${h(w.subject)}</title></head>
<body style="font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1a1a1a;max-width:32rem;margin:2rem auto;padding:0 1rem">
<p>${h(w.lead)}</p>
${
  purpose
    ? `<p style="font-size:2rem;font-weight:600;letter-spacing:.3rem;font-family:ui-monospace,monospace">{{code}}</p>\n<p>${h(words.validity)}</p>\n` +
      `{{#link}}<p><a href="{{link}}" style="display:inline-block;padding:.6rem 1.2rem;border-radius:.4rem;background:#1a56db;color:#fff;text-decoration:none;font-weight:600">${h(words.action[purpose])}</a></p>\n{{/link}}`
    : ""
}<p style="color:#555">${h(w.after)}</p>
<p style="color:#555">— {{org_name}}</p>
</body></html>
`;
  return { subject: w.subject, text: text.join("\n"), html };
}

/** The built-in templates: kind -> lower-cased locale -> template. */
const builtins = new Map<MailKind, Map<string, CompiledTemplate>>();
for (const [locale, words] of Object.entries(builtinPhrases)) {
  for (const kind of Object.keys(words.kinds) as MailKind[]) {
    let byLocale = builtins.get(kind);
    if (!byLocale) builtins.set(kind, (byLocale = new Map()));
    byLocale.set(locale.toLowerCase(), compileMailTemplate(kind, locale, builtinSource(kind, locale, words), "built-in"));
  }
}

/** The locales of the built-in templates. */
export const builtinLocales: readonly string[] = Object.keys(builtinPhrases);

export function builtinTemplate(kind: MailKind, localeLower: string): CompiledTemplate | undefined {
  return builtins.get(kind)?.get(localeLower);
}

/** A built-in mail (English unless another built-in locale is named). */
export function renderMail(kind: MailKind, input: MailValues, locale = "en"): MailContent {
  return renderCompiled(builtinTemplate(kind, locale.toLowerCase()) ?? builtinTemplate(kind, "en")!, input);
}

/** What a send renders its mails with: an organization's templates in the caller's locale, with the link beside the code if any. */
export interface Mailer {
  render(kind: MailKind, input: { code?: string; lifespanMs?: number }): MailContent;
  /** Its mails carry their recipient's own data beside the code (a link that names them). */
  readonly personal?: boolean;
}

/** The built-in English mails of an organization, without links. */
export function builtinMailer(orgName: string): Mailer {
  return { render: (kind, input) => renderMail(kind, { orgName, ...input }) };
}
