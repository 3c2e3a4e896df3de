import { Migration } from "@mikro-orm/migrations";

export class JobTurns extends Migration {
  override up(): void {
    // Periodic jobs that every serving process runs on its timer, but that one run
    // per interval serves the whole deployment (store/job-turns.ts): a row per job
    // says until when the last process to take its turn holds it.
    this.addSql(`
      create table job_turn (
        name text primary key,
        holder text not null,
        until timestamptz not null
      )`);
  }
}
