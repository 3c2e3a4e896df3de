import { Migration } from "@mikro-orm/migrations";

/**
 * The queued messages get a table of their own, courier_queue, which the courier
 * and the delivery API claim from; courier_message stays the record of every
 * message, and its history.
 *
 * Until now they found their due messages along partial indexes of courier_message
 * ("where status = 'queued'"). Each message that left the queue left a dead entry at
 * the head of those indexes, which every look for due mail walked, and only a
 * VACUUM of courier_message removes: on a table that keeps a week of mail, the
 * default autovacuum comes after millions of changes, and its index pass reads every
 * index of the table whole. The looks read 2.5 more blocks per thousand mails sent
 * since the last vacuum, 19 with a snapshot held open elsewhere (2,244 blocks per look
 * in one run of the bench). courier_queue holds a few rows at a time; autovacuum
 * visits it as soon as it has changed by a fifth, and its vacuum is cheap.
 *
 * Triggers keep courier_queue in step with courier_message's status, channel, due
 * time and claim, within the statement that changes them, for every writer: the
 * sends, the claims, renewals and outcomes of the courier and the delivery API, and
 * any server of an earlier version. So the looks for due mail pass over the mails
 * in flight without reading courier_message.
 */
export class CourierQueue extends Migration {
  override up(): void {
    this.addSql(`
      create table courier_queue (
        org_id text not null,
        id uuid not null,
        channel text not null,
        next_attempt_at timestamptz not null,
        claimed_until timestamptz null,
        queued_at timestamptz not null,
        primary key (org_id, id)
      )`);
    // The courier's due messages and the delivery API's, each across organizations
    // (whose are due) and an organization's, in the order they are claimed.
    this.addSql(`create index courier_queue_smtp_idx on courier_queue (next_attempt_at) where channel = 'smtp'`);
    this.addSql(`create index courier_queue_api_idx on courier_queue (next_attempt_at) where channel <> 'smtp'`);
    this.addSql(`create index courier_queue_org_smtp_idx on courier_queue (org_id, next_attempt_at) where channel = 'smtp'`);
    this.addSql(`create index courier_queue_org_api_idx on courier_queue (org_id, next_attempt_at) where channel <> 'smtp'`);
    // A queued message's row follows its channel, due time and claim; it goes when the message leaves the queue.
    this.addSql(`
      create function courier_queue_follow() returns trigger language plpgsql as $$
      begin
        if tg_op = 'UPDATE' and old.status = 'queued' and new.status = 'queued' then
          update courier_queue set channel = new.channel, next_attempt_at = new.next_attempt_at, claimed_until = new.claimed_until
          where org_id = new.org_id and id = new.id;
          if found then return null; end if;
        end if;
        if tg_op <> 'DELETE' and new.status = 'queued' then
          insert into courier_queue (org_id, id, channel, next_attempt_at, claimed_until, queued_at)
          values (new.org_id, new.id, new.channel, new.next_attempt_at, new.claimed_until, new.created_at)
          on conflict (org_id, id) do update set channel = excluded.channel, next_attempt_at = excluded.next_attempt_at, claimed_until = excluded.claimed_until;
        else
          delete from courier_queue where org_id = old.org_id and id = old.id;
        end if;
        return null;
      end
      $$`);
    this.addSql(`
      create trigger courier_queue_insert after insert on courier_message
      for each row when (new.status = 'queued') execute function courier_queue_follow()`);
    this.addSql(`
      create trigger courier_queue_update after update of status, next_attempt_at, channel, claimed_until on courier_message
      for each row when ((old.status = 'queued' or new.status = 'queued')
        and (old.status, old.next_attempt_at, old.channel, old.claimed_until) is distinct from (new.status, new.next_attempt_at, new.channel, new.claimed_until))
      execute function courier_queue_follow()`);
    this.addSql(`
      create trigger courier_queue_delete after delete on courier_message
      for each row when (old.status = 'queued') execute function courier_queue_follow()`);
    // In the transaction that created the triggers, which hold off every writer of courier_message until it commits.
    this.addSql(`
      insert into courier_queue (org_id, id, channel, next_attempt_at, claimed_until, queued_at)
      select org_id, id, channel, next_attempt_at, claimed_until, created_at from courier_message where status = 'queued'`);
    this.addSql(`drop index courier_message_queued_idx`);
    this.addSql(`drop index courier_message_queued_api_idx`);
    this.addSql(`drop index courier_message_queued_org_idx`);
  }
}
