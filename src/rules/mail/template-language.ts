// The language of mail templates: logic-less, written for this one job and
// nothing more. A template is text with
//
//   {{name}}             the value of a variable
//   {{#name}}…{{/name}}  the part between, only when the variable is not empty
//   {{^name}}…{{/name}}  the part between, only when it is empty
//
// where `name` is one of the variables the template is compiled with (the
// documented variables of its mail kind, see templates.ts). Nothing else is
// read: a name is never looked up on an object (no properties, no prototype, no
// dotted paths), values are strings from a Map, and there are no functions,
// partials, loops, unescaped output ({{{…}}}, {{&…}}) or delimiter changes. A
// template that uses anything else, or an unknown name, does not compile, so it
// is refused when it is saved rather than when a mail is sent.

export type Segment =
  | { kind: "text"; text: string }
  | { kind: "variable"; name: string }
  | { kind: "section"; name: string; inverted: boolean; body: Segment[] };

/** A template that does not compile: what is wrong and where (1-based line). */
export class TemplateError extends Error {
  readonly line: number;
  constructor(message: string, line: number) {
    super(`line ${line}: ${message}`);
    this.line = line;
  }
}

const NAME = /^[a-z][a-z0-9_]*$/;
/** Longer than any variable name; keeps error messages short. */
const SHOWN = 40;

const lineAt = (source: string, offset: number) => {
  let line = 1;
  for (let i = source.indexOf("\n"); i >= 0 && i < offset; i = source.indexOf("\n", i + 1)) line++;
  return line;
};

const shown = (tag: string) => (tag.length > SHOWN ? `${tag.slice(0, SHOWN)}…` : tag);

/**
 * Compiles `source`; every name it uses must be in `variables`. Throws
 * TemplateError (and nothing else) for anything that is not the language above.
 */
export function compileTemplate(source: string, variables: ReadonlySet<string>): Segment[] {
  const root: Segment[] = [];
  const open: { name: string; body: Segment[]; line: number }[] = [];
  let body = root;
  let at = 0;
  for (;;) {
    const start = source.indexOf("{{", at);
    if (start < 0) {
      if (at < source.length) body.push({ kind: "text", text: source.slice(at) });
      break;
    }
    if (start > at) body.push({ kind: "text", text: source.slice(at, start) });
    const line = lineAt(source, start);
    const end = source.indexOf("}}", start + 2);
    if (end < 0) throw new TemplateError(`"{{" is never closed by "}}"`, line);
    const tag = source.slice(start + 2, end);
    // {{{name}}} ends with "}}}": take the third brace into the tag, to refuse it as such.
    const full = source.startsWith("}", end + 2) && tag.startsWith("{") ? `${tag}}` : tag;
    at = end + 2 + (full.length - tag.length);
    const sigil = full.trimStart()[0] ?? "";
    const name = (/^[#^/]$/.test(sigil) ? full.trimStart().slice(1) : full).trim();
    if (/^[{&>!=<$%@*]$/.test(sigil)) {
      throw new TemplateError(`{{${shown(full)}}} is not supported: only {{name}}, {{#name}}…{{/name}} and {{^name}}…{{/name}}`, line);
    }
    if (!NAME.test(name)) {
      throw new TemplateError(`{{${shown(full)}}} is not a variable: a variable is one of ${[...variables].map((v) => `{{${v}}}`).join(", ")}`, line);
    }
    if (!variables.has(name)) {
      throw new TemplateError(`{{${name}}} is not a variable of this mail: its variables are ${[...variables].map((v) => `{{${v}}}`).join(", ")}`, line);
    }
    if (sigil === "#" || sigil === "^") {
      const section: Segment = { kind: "section", name, inverted: sigil === "^", body: [] };
      body.push(section);
      open.push({ name, body, line });
      body = section.body;
    } else if (sigil === "/") {
      const closing = open.pop();
      if (!closing) throw new TemplateError(`{{/${name}}} closes no section`, line);
      if (closing.name !== name) throw new TemplateError(`{{/${name}}} closes {{#${closing.name}}} of line ${closing.line}`, line);
      body = closing.body;
    } else {
      body.push({ kind: "variable", name });
    }
  }
  const unclosed = open.pop();
  if (unclosed) throw new TemplateError(`{{#${unclosed.name}}} is never closed by {{/${unclosed.name}}}`, unclosed.line);
  return root;
}

/** Whether `name` is used outside of any section (so that it is always in the output). */
export function usesAtTopLevel(segments: readonly Segment[], name: string): boolean {
  return segments.some((s) => s.kind === "variable" && s.name === name);
}

/** Whether `name` is used anywhere, in a section or not. */
export function uses(segments: readonly Segment[], name: string): boolean {
  return segments.some((s) => (s.kind === "variable" ? s.name === name : s.kind === "section" && (s.name === name || uses(s.body, name))));
}

/**
 * Renders compiled segments with `values` (a missing value is empty), each
 * value passed through `escape` (HTML-escaping in an HTML part).
 */
export function renderTemplate(segments: readonly Segment[], values: ReadonlyMap<string, string>, escape: (s: string) => string): string {
  let out = "";
  for (const s of segments) {
    if (s.kind === "text") out += s.text;
    else if (s.kind === "variable") out += escape(values.get(s.name) ?? "");
    else if (((values.get(s.name) ?? "") !== "") !== s.inverted) out += renderTemplate(s.body, values, escape);
  }
  return out;
}

export const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

export const verbatim = (s: string) => s;
