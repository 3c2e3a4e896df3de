import { Migration } from "@mikro-orm/migrations";

export class RateLimits extends Migration {
  override up(): void {
    // Fixed-window counters, shared by every server instance.
    this.addSql(`
      create table rate_limit (
        org_id text not null,
        key text not null,
        window_start timestamptz not null,
        hits int not null,
        expires_at timestamptz not null,
        primary key (org_id, key, window_start)
      )`);
    this.addSql(`create index rate_limit_expires_idx on rate_limit (expires_at)`);
  }
}
