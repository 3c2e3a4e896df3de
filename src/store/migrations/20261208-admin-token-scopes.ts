import { Migration } from "@mikro-orm/migrations";

export class AdminTokenScopes extends Migration {
  override up(): void {
    // What a token may call (rules/admin-tokens.ts): every existing token keeps all of it.
    this.addSql(`alter table admin_token add column scope text not null default 'admin'`);
  }
}
