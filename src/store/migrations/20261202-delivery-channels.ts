import { Migration } from "@mikro-orm/migrations";

export class DeliveryChannels extends Migration {
  override up(): void {
    // Where the codes of purposes handed to the SMS channel go (E.164, checked by the API).
    this.addSql(`alter table identity add column phone_number text null`);
    // How a message leaves: 'smtp' (the courier), 'mail_api' or 'sms' (claimed
    // through the delivery API). Rows queued before are the courier's.
    this.addSql(`alter table courier_message add column channel text not null default 'smtp'`);
    // The claim of the delivery API that holds a message: only it acks or fails it.
    this.addSql(`alter table courier_message add column lease_token uuid null`);
    // The courier and the delivery API each find their own due messages, so neither
    // walks the other's backlog: the courier's across organizations, the API's, and
    // an organization's by channel.
    this.addSql(`drop index courier_message_queued_idx`);
    this.addSql(`drop index courier_message_queued_org_idx`);
    this.addSql(`create index courier_message_queued_idx on courier_message (next_attempt_at) where status = 'queued' and channel = 'smtp'`);
    this.addSql(`create index courier_message_queued_api_idx on courier_message (next_attempt_at) where status = 'queued' and channel <> 'smtp'`);
    this.addSql(`create index courier_message_queued_org_idx on courier_message (org_id, channel, next_attempt_at) where status = 'queued'`);
  }
}
