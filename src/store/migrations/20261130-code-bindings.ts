import { Migration } from "@mikro-orm/migrations";

export class CodeBindings extends Migration {
  override up(): void {
    // The flow a code is bound to: '' for none, 'admin' for an administrator's
    // recovery code (redeemed through its flow id only), else 'b:' and the
    // SHA-256 of the application's binding value.
    this.addSql(`alter table code add column binding text not null default ''`);
    // Bound codes of one identity and purpose take one of a few slots: at most
    // that many live at once, kept by the database.
    this.addSql(`alter table code add column slot smallint null`);
    this.addSql(`drop index code_live_key`);
    this.addSql(`create unique index code_live_key on code (org_id, identity_id, purpose, binding) where dead_at is null`);
    this.addSql(`create unique index code_live_slot_key on code (org_id, identity_id, purpose, slot) where dead_at is null and slot is not null`);
  }
}
