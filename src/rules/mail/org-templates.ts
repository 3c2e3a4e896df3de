// An organization's mail templates as a send uses them: read per organization
// (one statement for all its templates) into a cache of this process, compiled
// once, and forgotten as soon as an administrator changes them, here or in
// another process (rules/org-changes.ts). A send then takes its templates from
// memory: no statement of its own, the same for every username.
//
// Which template a mail uses: for each locale of the chain (locales.ts: the
// caller's, the organization's default, English), the organization's own
// template of that kind and locale, else the built-in one; the first found wins.
import type { Org } from "../../domain/organization.ts";
import { organizationTemplates, type StoredTemplate } from "../../store/mail-templates.ts";
import type { Sql } from "../../store/sql.ts";
import type { OrgChanges } from "../org-changes.ts";
import { mailKinds, purposeOfKind, type MailKind } from "./kinds.ts";
import { codeLink, type LinkTarget } from "./links.ts";
import { localeChain } from "./locales.ts";
import { builtinTemplate, compileMailTemplate, renderCompiled, type CompiledTemplate, type Mailer } from "./templates.ts";

/** How long a process keeps an organization's templates without hearing of a change (a bound for a missed notification). */
const TTL_MS = 60_000;
/** Organizations whose templates a process keeps at once. */
const MAX_CACHED = 10_000;

/** The templates of one organization, by kind and lower-cased locale. */
export class OrgTemplateSet {
  private readonly byKind = new Map<MailKind, Map<string, CompiledTemplate>>();

  constructor(templates: readonly CompiledTemplate[]) {
    for (const t of templates) {
      let byLocale = this.byKind.get(t.kind);
      if (!byLocale) this.byKind.set(t.kind, (byLocale = new Map()));
      byLocale.set(t.locale.toLowerCase(), t);
    }
  }

  /** The template of `kind` for the first locale of `chain` that has one (the chain ends with "en", which always has one). */
  resolve(kind: MailKind, chain: readonly string[]): CompiledTemplate {
    const own = this.byKind.get(kind);
    for (const locale of chain) {
      const t = own?.get(locale) ?? builtinTemplate(kind, locale);
      if (t) return t;
    }
    return builtinTemplate(kind, "en")!;
  }
}

/** Stored templates, compiled; one that no longer compiles (a rule tightened since it was saved) is left out: its built-in one is used. */
export function compileStored(rows: readonly StoredTemplate[]): OrgTemplateSet {
  const compiled: CompiledTemplate[] = [];
  for (const row of rows) {
    const kind = mailKinds.find((k) => k === row.kind);
    if (!kind) continue;
    try {
      compiled.push(compileMailTemplate(kind, row.locale, { subject: row.subject, text: row.text, html: row.html }, "organization"));
    } catch {
      // Left out, as said above.
    }
  }
  return new OrgTemplateSet(compiled);
}

export interface MailerOptions {
  /** The caller's locales, most preferred first (may be empty). */
  locales: readonly string[];
  /** Where the link beside the code leads; no link when absent. */
  link?: LinkTarget;
}

export class MailTemplates {
  private readonly sql: Sql;
  private readonly publicUrl: string;
  private readonly cache = new Map<string, { until: number; set: Promise<OrgTemplateSet> }>();

  constructor(deps: { sql: Sql; publicUrl: string; changes?: OrgChanges }) {
    this.sql = deps.sql;
    this.publicUrl = deps.publicUrl;
    deps.changes?.subscribe((orgId) => this.forget(orgId));
  }

  /** The organization's templates, from the cache or read once for every concurrent caller. */
  templatesOf(orgId: string): Promise<OrgTemplateSet> {
    const now = Date.now();
    const hit = this.cache.get(orgId);
    if (hit && hit.until > now) return hit.set;
    if (this.cache.size >= MAX_CACHED) this.cache.clear();
    const set = organizationTemplates(this.sql, orgId).then(compileStored);
    const entry = { until: now + TTL_MS, set };
    this.cache.set(orgId, entry);
    // A failed read is not kept: the next send reads again.
    set.catch(() => {
      if (this.cache.get(orgId) === entry) this.cache.delete(orgId);
    });
    return set;
  }

  /** Forgets an organization's templates (every organization's when undefined). A read in flight is forgotten too. */
  forget(orgId: string | undefined): void {
    if (orgId === undefined) this.cache.clear();
    else this.cache.delete(orgId);
  }

  /** The mails of one send for `org`: its templates in the caller's locale, with the link beside the code if asked. */
  async mailer(org: Org, opts: MailerOptions): Promise<Mailer> {
    return mailerOf(org, await this.templatesOf(org.id), opts, this.publicUrl);
  }
}

export function mailerOf(org: Org, set: OrgTemplateSet, opts: MailerOptions, publicUrl: string): Mailer & { template(kind: MailKind): CompiledTemplate } {
  const chain = localeChain(opts.locales, org.settings.defaultLocale);
  const template = (kind: MailKind) => set.resolve(kind, chain);
  return {
    template,
    personal: opts.link !== undefined,
    render(kind, input) {
      const purpose = purposeOfKind(kind);
      const link = purpose && opts.link && input.code ? codeLink(publicUrl, purpose, opts.link, input.code) : undefined;
      return renderCompiled(template(kind), { orgName: org.name, code: input.code, lifespanMs: input.lifespanMs, link });
    },
  };
}
