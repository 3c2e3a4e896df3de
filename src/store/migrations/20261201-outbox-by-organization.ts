import { Migration } from "@mikro-orm/migrations";

export class OutboxByOrganization extends Migration {
  override up(): void {
    // Couriers claim an organization's due mails at a time (store/outbox.ts), oldest first.
    this.addSql(`create index courier_message_queued_org_idx on courier_message (org_id, next_attempt_at) where status = 'queued'`);
  }
}
