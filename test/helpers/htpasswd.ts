/**
 * htpasswd files for the registry's `htpasswd` auth mode (DVCR's own mode): one `user:bcrypt-hash` line per
 * user. Hashes come from bcryptjs (pure JS, `$2b$` prefix), which Go's bcrypt in distribution 2.8 accepts.
 */
import { writeFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';

/** bcrypt cost for test files: low, so the registry's check of every request stays fast. */
const COST = 5;

/** One htpasswd line for `user`. Throws on a user name that htpasswd cannot hold. */
export function htpasswdLine(user: string, password: string): string {
  if (user === '' || user.includes(':') || /[\r\n]/.test(user)) {
    throw new Error(`htpasswd: invalid user name ${JSON.stringify(user)}`);
  }
  return `${user}:${bcrypt.hashSync(password, COST)}`;
}

/** Writes an htpasswd file at `path` (replacing it) with a bcrypt entry for each user => password. */
export async function writeHtpasswd(path: string, users: Record<string, string>): Promise<void> {
  const lines = Object.entries(users).map(([user, password]) => htpasswdLine(user, password));
  await writeFile(path, lines.join('\n') + '\n', { mode: 0o600 });
}
