import { Migration } from "@mikro-orm/migrations";

export class Events extends Migration {
  override up(): void {
    // The event trail (store/events.ts): written by the statement or transaction of
    // the change it records, keyed by the organization first like every table.
    // `id` comes from a sequence, whose order is not the order of commits; `tx` is
    // the writing transaction's id (xid8 as bigint): a reader hands out only events
    // whose transaction is older than every transaction still in flight, in
    // (tx, id) order, so that an event committing late can never fall behind a
    // reader's cursor.
    this.addSql(`
      create table event (
        org_id text not null,
        id bigserial not null,
        tx bigint not null default (pg_current_xact_id()::text::bigint),
        type text not null,
        purpose text null,
        identity_id uuid null,
        code_id uuid null,
        mail_id uuid null,
        actor text null,
        request_id text null,
        details jsonb null,
        occurred_at timestamptz not null,
        primary key (org_id, id)
      )`);
    // Followed in (tx, id) order, per organization and across them.
    this.addSql(`create index event_org_position_idx on event (org_id, tx, id)`);
    this.addSql(`create index event_position_idx on event (tx, id)`);
    // Pruned by age: a BRIN index over an append-only, time-ordered table costs next to nothing to keep.
    this.addSql(`create index event_occurred_at_idx on event using brin (occurred_at)`);
  }
}
