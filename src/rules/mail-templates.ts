// What administrators do with an organization's mail templates: save one
// (compiled first, so a template that could not render is refused with the
// part and line that is wrong), list, delete, and preview what a send would
// write. Every change is announced to every server's cache (org-changes.ts).
import { FailedPrecondition, InvalidArgument, NotFound } from "../domain/errors.ts";
import type { Audit } from "../domain/events.ts";
import type { Org } from "../domain/organization.ts";
import type { Purpose } from "../domain/purpose.ts";
import { recordEvent } from "../store/events.ts";
import { deleteTemplate, organizationTemplates, saveTemplate, type StoredTemplate } from "../store/mail-templates.ts";
import { notifyOrgChanged } from "../store/org-changes.ts";
import type { AdminDeps } from "./admin.ts";
import { effectivePolicy } from "./codes/policy.ts";
import { purposeOfKind, type MailKind } from "./mail/kinds.ts";
import { codeLink } from "./mail/links.ts";
import { canonicalLocale } from "./mail/locales.ts";
import { compileStored, mailerOf } from "./mail/org-templates.ts";
import { builtinLocales, compileMailTemplate, renderCompiled, type MailContent, type TemplateOrigin, type TemplateSource } from "./mail/templates.ts";

/** Templates an organization may keep: every kind in ten locales. */
export const MAX_TEMPLATES_PER_ORG = 50;

const localeOf = (tag: string, field = "locale") => {
  const locale = canonicalLocale(tag);
  if (!locale) throw new InvalidArgument(field, "a BCP 47 language tag such as en, de or pt-BR");
  return locale;
};

async function organization(deps: AdminDeps, orgId: string): Promise<Org> {
  const org = await deps.orgs.resolve(orgId, "");
  if (!org) throw new NotFound(`organization ${orgId}`);
  return org;
}

/** Saves the organization's template of `kind` in `locale` (canonical), once it compiles. */
export async function setMailTemplate(
  deps: AdminDeps,
  req: { orgId: string; kind: MailKind; locale: string; source: TemplateSource },
  audit: Audit = {},
): Promise<StoredTemplate> {
  const locale = localeOf(req.locale);
  compileMailTemplate(req.kind, locale, req.source, "organization");
  const saved = await deps.sql.transaction(async (tx) => {
    const row = await saveTemplate(tx, { orgId: req.orgId, kind: req.kind, locale, ...req.source, updatedAt: deps.clock.now() }, MAX_TEMPLATES_PER_ORG);
    if (typeof row !== "string") {
      await recordEvent(tx, { orgId: req.orgId, type: "mail_template.set", details: { kind: req.kind, locale }, occurredAt: row.updatedAt }, audit);
      await notifyOrgChanged(tx, req.orgId);
    }
    return row;
  });
  if (saved === "no-organization") throw new NotFound(`organization ${req.orgId}`);
  if (saved === "full") throw new FailedPrecondition(`organization ${req.orgId} has ${MAX_TEMPLATES_PER_ORG} templates, the most it may keep: delete one first`);
  deps.changes.changed(req.orgId);
  return saved;
}

export async function listMailTemplates(deps: AdminDeps, orgId: string): Promise<{ templates: StoredTemplate[]; builtinLocales: readonly string[] }> {
  await organization(deps, orgId);
  return { templates: await organizationTemplates(deps.sql, orgId), builtinLocales };
}

export async function deleteMailTemplate(deps: AdminDeps, req: { orgId: string; kind: MailKind; locale: string }, audit: Audit = {}): Promise<boolean> {
  const locale = localeOf(req.locale);
  await organization(deps, req.orgId);
  const deleted = await deps.sql.transaction(async (tx) => {
    const gone = await deleteTemplate(tx, req.orgId, req.kind, locale);
    if (gone) {
      await recordEvent(tx, { orgId: req.orgId, type: "mail_template.deleted", details: { kind: req.kind, locale }, occurredAt: deps.clock.now() }, audit);
      await notifyOrgChanged(tx, req.orgId);
    }
    return gone;
  });
  if (deleted) deps.changes.changed(req.orgId);
  return deleted;
}

/** A code of the organization's format for a preview: its alphabet from the second character on, "123456" for digits. */
const sampleCode = (alphabet: string, length: number) => Array.from({ length }, (_, i) => alphabet[(i + 1) % alphabet.length]).join("");

export const PREVIEW_USERNAME = "jdoe@example.com";

/**
 * What a send in `locale` would write for `kind` (the organization's saved
 * templates, read now, else the built-in ones), or what `draft` would, with
 * sample values. Nothing is saved or sent.
 */
export async function previewMailTemplate(
  deps: AdminDeps,
  req: { orgId: string; kind: MailKind; locale: string; draft?: TemplateSource },
): Promise<{ content: MailContent; locale: string; origin: TemplateOrigin }> {
  const locale = localeOf(req.locale);
  const org = await organization(deps, req.orgId);
  const template = req.draft
    ? compileMailTemplate(req.kind, locale, req.draft, "draft")
    : mailerOf(org, compileStored(await organizationTemplates(deps.sql, org.id)), { locales: [locale] }, deps.config.publicUrl).template(req.kind);
  const purpose: Purpose | undefined = purposeOfKind(req.kind);
  const policy = purpose ? effectivePolicy(deps.config, org.settings, purpose) : undefined;
  const code = policy ? sampleCode(policy.alphabet, policy.length) : undefined;
  const linked = purpose && code && org.settings.mailLinks?.[purpose] === true && org.settings.returnUrl;
  const link = linked ? codeLink(deps.config.publicUrl, purpose, { orgId: org.id, username: PREVIEW_USERNAME }, code) : undefined;
  return { content: renderCompiled(template, { orgName: org.name, code, lifespanMs: policy?.lifespanMs, link }), locale: template.locale, origin: template.origin };
}
