import { Migration } from "@mikro-orm/migrations";

export class CodeHashInput extends Migration {
  override up(): void {
    // What a code's hash was taken over, besides the code: 1, the row id (a code
    // verified in two statements, the hash compared by the server between them);
    // 2, the organization, username, purpose and binding, which a verification by
    // username knows before it finds the row, so that the row is compared,
    // counted and consumed in one statement. Rows written before are 1.
    this.addSql(`alter table code add column hash_input smallint not null default 1`);
  }
}
