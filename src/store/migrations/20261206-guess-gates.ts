import { Migration } from "@mikro-orm/migrations";

export class GuessGates extends Migration {
  override up(): void {
    // Wrong-guess limits are read through their counters' upserts now (GATE_OVER_SQL in
    // store/codes.ts), in the guess's own statement. The function of
    // 20261205-guess-turns read the distributed rate_limit table from inside a
    // statement already routed to an organization's node, which Citus refuses.
    this.addSql(`drop function if exists codegate_window_hits(text, text, timestamptz)`);
  }
}
