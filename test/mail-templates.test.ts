// The mail templates without a server: the logic-less template language
// (src/rules/mail/template-language.ts) as a template's author, or an attacker
// holding an admin token, would try it; what a template of each kind must and
// may use; the built-in templates in every shipped locale; and which locale a
// mail is written in (the send's, Accept-Language, the organization's, English).
import { describe, expect, it } from "vitest";
import { fc, test as fcTest } from "@fast-check/vitest";
import { InvalidArgument } from "../src/domain/errors.ts";
import { builtinPhrases } from "../src/rules/mail/builtin-locales.ts";
import { mailKinds, variablesOf, type MailKind } from "../src/rules/mail/kinds.ts";
import { codeLink } from "../src/rules/mail/links.ts";
import { canonicalLocale, formatLifespan, localeChain, parseAcceptLanguage } from "../src/rules/mail/locales.ts";
import { compileStored, mailerOf, OrgTemplateSet } from "../src/rules/mail/org-templates.ts";
import { compileTemplate, renderTemplate, TemplateError, escapeHtml, verbatim } from "../src/rules/mail/template-language.ts";
import { builtinLocales, compileMailTemplate, renderCompiled, renderMail } from "../src/rules/mail/templates.ts";
import type { Org } from "../src/domain/organization.ts";

const VARS = new Set(["org_name", "code", "lifespan", "link"]);
const render = (source: string, values: Record<string, string>, escape = verbatim) =>
  renderTemplate(compileTemplate(source, VARS), new Map(Object.entries(values)), escape);
const refusal = (source: string, variables: ReadonlySet<string> = VARS): string => {
  try {
    compileTemplate(source, variables);
  } catch (err) {
    expect(err).toBeInstanceOf(TemplateError);
    return (err as Error).message;
  }
  throw new Error(`compiled: ${source}`);
};

describe("the template language", () => {
  it("inserts variables, keeps sections by whether their variable is empty, and leaves all other text as it is", () => {
    expect(render("Code {{code}} for {{ org_name }}.", { code: "123456", org_name: "Acme" })).toBe("Code 123456 for Acme.");
    const linked = "{{#link}}Open {{link}}{{/link}}{{^link}}No link{{/link}}";
    expect(render(linked, { link: "https://x.test/v" })).toBe("Open https://x.test/v");
    expect(render(linked, { link: "" })).toBe("No link");
    expect(render(linked, {})).toBe("No link");
    // Braces that are not a tag, and template syntaxes of other engines, are plain text: nothing is evaluated.
    const literal = "} }} {x} ${process.env.HOME} <%= 7*7 %> #{7*7} {% raw %} @{code}";
    expect(render(literal, {})).toBe(literal);
  });

  it("HTML-escapes the values it inserts in an HTML part, never the template's own markup", () => {
    const html = render('<a href="{{link}}"><b>{{org_name}}</b></a>', { link: 'https://x.test/v#a=1&b="2"', org_name: `<script>alert('x')</script> & Co` }, escapeHtml);
    expect(html).toBe('<a href="https://x.test/v#a=1&amp;b=&quot;2&quot;"><b>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co</b></a>');
  });

  it("reads nothing but the variables it is given: properties, prototypes and paths are refused when compiled", () => {
    for (const name of ["constructor", "__proto__", "toString", "valueOf", "hasOwnProperty", "process", "globalThis", "env", "this"]) {
      expect(refusal(`{{${name}}}`), name).toMatch(/is not a variable.*: .*\{\{org_name\}\}, \{\{code\}\}, \{\{lifespan\}\}, \{\{link\}\}$/);
      expect(refusal(`{{#${name}}}x{{/${name}}}`), name).toMatch(/is not a variable/);
    }
    for (const tag of ["{{org_name.length}}", "{{code.constructor}}", "{{code.__proto__.polluted}}", "{{.}}", "{{ org name }}", "{{Code}}", "{{}}", "{{code()}}", "{{lookup code 0}}", "{{code[0]}}"]) {
      expect(refusal(tag), tag).toMatch(/is not a variable: a variable is one of/);
    }
    // Even at render time a name is only ever looked up in a Map of strings.
    const polluted = new Map([["code", "1"]]);
    expect(renderTemplate([{ kind: "variable", name: "constructor" }], polluted, verbatim)).toBe("");
  });

  it("refuses what would run code, change the language or print unescaped", () => {
    for (const tag of ["{{{code}}}", "{{&code}}", "{{>partial}}", "{{!comment}}", "{{=<% %>=}}", "{{<parent}}", "{{$block}}", "{{%pragma}}", "{{@index}}", "{{*star}}"]) {
      expect(refusal(tag), tag).toMatch(/is not supported: only \{\{name\}\}/);
    }
  });

  it("says which line is wrong: unclosed tags and sections, and mismatched ones", () => {
    expect(refusal("a\nb {{code")).toBe('line 2: "{{" is never closed by "}}"');
    expect(refusal("{{#link}}\n{{code}}")).toBe("line 1: {{#link}} is never closed by {{/link}}");
    expect(refusal("x\n\n{{/link}}")).toBe("line 3: {{/link}} closes no section");
    expect(refusal("{{#link}}\n{{#code}}{{/link}}{{/code}}")).toBe("line 2: {{/link}} closes {{#code}} of line 2");
    expect(refusal("{{lifespan}}", new Set(["org_name"]))).toBe("line 1: {{lifespan}} is not a variable of this mail: its variables are {{org_name}}");
  });

  fcTest.prop([fc.string({ unit: fc.constantFrom("{", "}", "#", "^", "/", "&", ">", "!", " ", "\n", "a", "code", "link", "org_name", ".", "x") , maxLength: 60 })])(
    "compiles any text or refuses it with a TemplateError, and renders what it compiled without reading anything but its values",
    (source) => {
      let segments;
      try {
        segments = compileTemplate(source, VARS);
      } catch (err) {
        expect(err).toBeInstanceOf(TemplateError);
        return;
      }
      const out = renderTemplate(segments, new Map([["code", "C"], ["org_name", "O"], ["link", "L"], ["lifespan", "T"]]), verbatim);
      expect(out).not.toMatch(/function|\[object|undefined/);
    },
  );
});

describe("a template of a mail kind", () => {
  const good = { subject: "Your {{org_name}} code", text: "Code:\n    {{code}}\n", html: "<p>{{code}}</p>" };

  it("may use only its kind's variables: a notice has no code, no lifespan and no link", () => {
    expect(variablesOf("already_registered")).toEqual(new Set(["org_name"]));
    expect(() => compileMailTemplate("unknown_recovery", "en", { subject: "Hi", text: "{{code}}", html: "<p>x</p>" }, "organization")).toThrow(
      /^text: line 1: \{\{code\}\} is not a variable of this mail: its variables are \{\{org_name\}\}$/,
    );
    expect(compileMailTemplate("unknown_recovery", "en", { subject: "{{org_name}}", text: "Nothing", html: "<p>Nothing</p>" }, "organization").kind).toBe("unknown_recovery");
  });

  it("never puts the code or the link in the subject, which is kept in plain text beside the sealed mail", () => {
    for (const subject of ["Your code is {{code}}", "{{#link}}{{link}}{{/link}}", "{{ code }}"]) {
      const err = (() => {
        try {
          compileMailTemplate("login", "en", { ...good, subject }, "organization");
        } catch (e) {
          return e;
        }
      })();
      expect(err, subject).toBeInstanceOf(InvalidArgument);
      expect((err as InvalidArgument).field).toBe("subject");
      expect((err as Error).message).toMatch(/must not use \{\{code\}\} or \{\{link\}\}: it is kept in plain text/);
    }
    expect(() => compileMailTemplate("login", "en", { ...good, subject: "Two\nlines" }, "organization")).toThrow(/^subject: one line/);
  });

  it("of a code shows the code in both parts, outside any section", () => {
    expect(() => compileMailTemplate("login", "en", { ...good, text: "no code here" }, "organization")).toThrow(/^text: a code's mail shows \{\{code\}\}/);
    expect(() => compileMailTemplate("registration", "en", { ...good, html: "{{#link}}{{code}}{{/link}}" }, "organization")).toThrow(/^html: a code's mail shows \{\{code\}\}/);
  });

  it("renders its variables: the lifespan in words of its own locale, the link only when there is one", () => {
    const t = compileMailTemplate("login", "de", { subject: "{{org_name}}", text: "{{code}} ({{lifespan}}){{#link}} {{link}}{{/link}}", html: "<p>{{code}}</p>" }, "organization");
    expect(renderCompiled(t, { orgName: "A", code: "42", lifespanMs: 600_000 }).text).toBe("42 (10 Minuten)");
    expect(renderCompiled(t, { orgName: "A", code: "42", lifespanMs: 86_400_000, link: "https://l.test/#x" }).text).toBe("42 (1 Tag) https://l.test/#x");
  });
});

describe("the built-in templates", () => {
  it("come in English and at least two more locales", () => {
    expect(builtinLocales).toContain("en");
    expect(builtinLocales.length).toBeGreaterThanOrEqual(3);
    expect(new Set(builtinLocales)).toEqual(new Set(["en", "de", "fr", "es"]));
  });

  it.each(builtinLocales)("in %s: every kind, its own words, the code on its own indented line, the lifespan in the locale, the link when given", (locale) => {
    const lifespan = formatLifespan(600_000, locale);
    for (const kind of mailKinds) {
      const words = builtinPhrases[locale].kinds[kind];
      const plain = renderMail(kind, { orgName: "Ünï <Org>", code: "482913", lifespanMs: 600_000 }, locale);
      expect(plain.subject).toBe(words.subject.replace("{{org_name}}", "Ünï <Org>"));
      expect(plain.text.startsWith(words.lead)).toBe(true);
      expect(plain.html).toContain(`<html lang="${locale}">`);
      expect(plain.html).toContain("Ünï &lt;Org&gt;");
      expect(plain.html).not.toContain("<Org>");
      if (kind === "already_registered" || kind === "unknown_recovery") {
        expect(plain.text).not.toContain("482913");
        continue;
      }
      expect(plain.text).toMatch(/^ {4}482913$/m);
      expect(plain.html).toContain(">482913</p>");
      expect(plain.text).toContain(lifespan);
      expect(plain.text).not.toContain("http");
      const linked = renderMail(kind, { orgName: "Org", code: "482913", lifespanMs: 600_000, link: "https://codegate.test/verify#code=482913&org=x" }, locale);
      expect(linked.text).toContain(`${builtinPhrases[locale].linkLead}\nhttps://codegate.test/verify#code=482913&org=x\n`);
      expect(linked.html).toContain('href="https://codegate.test/verify#code=482913&amp;org=x"');
      expect(linked.html).toContain(`>${escapeHtml(builtinPhrases[locale].action[kind])}</a>`);
    }
  });

  it("in English are the mails of before: the same words and layout", () => {
    const m = renderMail("login", { orgName: "Acme", code: "123456", lifespanMs: 600_000 });
    expect(m.subject).toBe("Your Acme login code");
    expect(m.text).toBe(
      "Use this code to log in:\n\n    123456\n\nIt is valid for 10 minutes and works once.\n\nIf you did not try to log in, you can ignore this mail.\n\n— Acme\n",
    );
    expect(formatLifespan(86_400_000, "en")).toBe("1 day");
    expect(formatLifespan(90_000, "en")).toBe("90 seconds");
    expect(formatLifespan(150_500, "en")).toBe("3 minutes");
    expect(formatLifespan(3_600_000, "fr")).toBe("1\u00a0heure"); // ICU: a no-break space
  });
});

describe("the locale of a mail", () => {
  it("reads Accept-Language by preference, dropping *, q=0 and what is no language tag", () => {
    expect(parseAcceptLanguage("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5")).toEqual(["fr-CH", "fr", "en", "de"]);
    expect(parseAcceptLanguage("de;q=0.2, es, pt-br;q=0.9, nl;q=0")).toEqual(["es", "pt-BR", "de"]);
    expect(parseAcceptLanguage("*")).toEqual([]);
    expect(parseAcceptLanguage("en-US,<script>,a,12,de-DE-toolongsubtag")).toEqual(["en-US"]);
    expect(parseAcceptLanguage(undefined)).toEqual([]);
    expect(parseAcceptLanguage("x".repeat(100_000))).toEqual([]);
  });

  it("canonicalizes tags and refuses what is not one", () => {
    expect(canonicalLocale("PT-br")).toBe("pt-BR");
    expect(canonicalLocale("zh-hant-tw")).toBe("zh-Hant-TW");
    for (const bad of ["", "e", "en_US", "en-", "-en", "english!", "a".repeat(40), "en-US-x-y\n"]) expect(canonicalLocale(bad), bad).toBeUndefined();
  });

  it("tries the caller's locales with their languages, then the organization's default, then English", () => {
    expect(localeChain(["de-AT", "fr"], "es")).toEqual(["de-at", "de", "fr", "es", "en"]);
    expect(localeChain([], undefined)).toEqual(["en"]);
    expect(localeChain(["zh-Hant-TW"], "en")).toEqual(["zh-hant-tw", "zh-hant", "zh", "en"]);
  });

  it("uses the organization's template of a locale before the built-in one, and the first locale of the chain that has either", () => {
    const org: Org = { id: "or-aaaaa-bbbbb-cccccccccccccccc", tenantId: "acct-x", name: "Org", settings: { defaultLocale: "nl" }, createdAt: new Date() };
    const own = (kind: MailKind, locale: string, subject: string) => ({ orgId: org.id, kind, locale, subject, text: "{{code}}", html: "{{code}}", updatedAt: new Date() });
    const set = compileStored([own("login", "nl", "NL login"), own("login", "de-CH", "CH login"), own("bogus" as MailKind, "en", "x"), { ...own("login", "en", "broken"), text: "{{nope}}" }]);
    const subject = (locales: string[]) => mailerOf(org, set, { locales }, "http://codegate.test").render("login", { code: "1", lifespanMs: 60_000 }).subject;
    expect(subject(["de-CH"])).toBe("CH login");
    expect(subject(["de-DE"])).toBe("Ihr Anmeldecode für Org"); // built-in de before the default
    expect(subject(["ja"])).toBe("NL login"); // the organization's default
    expect(subject([])).toBe("NL login");
    // A stored template that no longer compiles is left out: the built-in one is used.
    expect(mailerOf({ ...org, settings: {} }, set, { locales: ["en"] }, "http://codegate.test").render("login", { code: "1" }).subject).toBe("Your Org login code");
    expect(new OrgTemplateSet([]).resolve("recovery", ["xx"]).locale).toBe("en");
  });

  it("puts the link's data in the fragment of the verify page, which browsers send to no server", () => {
    const link = codeLink("https://codegate.example", "login", { orgId: "or-1", username: "jdoe+x@example.com", state: "s-1" }, "123 456");
    const url = new URL(link);
    expect(url.origin + url.pathname).toBe("https://codegate.example/verify");
    expect(url.search).toBe("");
    expect(Object.fromEntries(new URLSearchParams(url.hash.slice(1)))).toEqual({ purpose: "login", org: "or-1", username: "jdoe+x@example.com", code: "123 456", state: "s-1" });
  });
});
