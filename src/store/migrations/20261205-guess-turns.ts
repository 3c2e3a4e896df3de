import { Migration } from "@mikro-orm/migrations";

export class GuessTurns extends Migration {
  override up(): void {
    // The hits of a rate-limit window, read in turn (store/codes.ts): it takes a
    // transaction-level advisory lock on the window, then reads the counter. A
    // VOLATILE function takes a fresh snapshot for each of its statements, so the
    // read sees every count committed by the statements that held the lock before:
    // concurrent guesses at one account's codes are decided one after another. A
    // read in the guess's own statement saw its snapshot, taken before the others
    // had counted: all of them passed the limit at once.
    this.addSql(`
      create function codegate_window_hits(p_org text, p_key text, p_start timestamptz) returns int
      language sql volatile as $$
        select pg_advisory_xact_lock(hashtextextended(p_org || '|' || p_key || '|' || extract(epoch from p_start)::text, 0));
        select coalesce((select hits from rate_limit where org_id = p_org and key = p_key and window_start = p_start), 0);
      $$`);
  }
}
