import { Migration } from "@mikro-orm/migrations";

export class MailTemplates extends Migration {
  override up(): void {
    // An organization's own mail templates, per kind and locale. Keyed by the
    // organization first, like every table, so it distributes with it.
    this.addSql(`
      create table mail_template (
        org_id text not null,
        kind text not null,
        locale text not null,
        subject text not null,
        text text not null,
        html text not null,
        updated_at timestamptz not null,
        primary key (org_id, kind, locale)
      )`);
  }
}
