// Turns at the periodic jobs that every serving process runs on its timer but
// that one run per interval serves the whole deployment (retention): a process
// takes the job's turn until a time, unless another holds it, and renews it while
// it works. A process that dies holding it only delays the job until its turn ends.
import type { Sql } from "./sql.ts";

/** Takes `job`'s turn for `holder` until `until`, unless another's turn lasts past `now`; true when taken. */
export async function takeTurn(sql: Sql, job: string, holder: string, now: Date, until: Date): Promise<boolean> {
  const rows = await sql.query(
    `insert into job_turn (name, holder, until) values ($1, $2, $4)
     on conflict (name) do update set holder = excluded.holder, until = excluded.until where job_turn.until <= $3
     returning name`,
    [job, holder, now, until],
  );
  return rows.length > 0;
}

/**
 * Moves the end of `holder`'s turn at `job` to `until`, never back (a renewal that commits late
 * must not end the turn early); nothing when another process holds the turn now.
 */
export async function renewTurn(sql: Sql, job: string, holder: string, until: Date): Promise<void> {
  await sql.query(`update job_turn set until = greatest(until, $3) where name = $1 and holder = $2`, [job, holder, until]);
}
