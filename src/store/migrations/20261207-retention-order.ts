import { Migration } from "@mikro-orm/migrations";
import { PostgreSqlDriver } from "@mikro-orm/postgresql";

/**
 * Retention (store/retention.ts) finds what it prunes by age. Without an index in
 * that order, each run read the whole code and courier_message tables at least
 * once, whatever little it found: at a hundred codes a second kept for a week, some
 * sixty million rows every ten minutes. The event table's BRIN index did not stay
 * good either: pruned rows leave their range's summary as wide as it was, and the
 * rows written into the space they leave make it wider, so that in time every
 * range matched every cutoff.
 *
 * Each index is partial on a condition that every row meets and that only the
 * retention statements state ("< 'infinity'"), so that no statement of the hot
 * path can be planned along it (see 20261203-listing-order.ts); and on columns
 * that the frequent updates leave alone, so that those stay HOT (a mail's is its
 * creation time: its updated_at changes with every claim). Built CONCURRENTLY, as
 * that migration's.
 */
export class RetentionOrder extends Migration {
  override isTransactional(): boolean {
    return false;
  }

  override up(): void {
    // The embedded PGlite serves one process (see 20261203-listing-order.ts).
    const online = this.driver instanceof PostgreSqlDriver ? "concurrently " : "";
    this.addSql(`drop index ${online}if exists code_dead_at_idx`);
    this.addSql(`create index ${online}code_dead_at_idx on code (dead_at) where dead_at < 'infinity'`);
    this.addSql(`drop index ${online}if exists code_expires_at_idx`);
    this.addSql(`create index ${online}code_expires_at_idx on code (expires_at) where expires_at < 'infinity'`);
    this.addSql(`drop index ${online}if exists courier_message_finished_idx`);
    this.addSql(`create index ${online}courier_message_finished_idx on courier_message (created_at) where status in ('sent', 'abandoned') and created_at < 'infinity'`);
    this.addSql(`drop index ${online}if exists event_occurred_idx`);
    this.addSql(`create index ${online}event_occurred_idx on event (occurred_at) where occurred_at < 'infinity'`);
    this.addSql(`drop index ${online}if exists event_occurred_at_idx`);
  }
}
