// The data directory: the one place a sandboxed module may write, so it must belong to the
// module's uid. Handed over with `chown -R` (coreutils walks the tree without following
// symlinks, with openat and O_NOFOLLOW, so a link the module left behind cannot redirect the
// root-run chown to a host file), and only when the directory's owner is not already the
// module's uid: the first start, or after the uid changed. A directory the host has just made
// (owned by the host's own uid, still empty) is handed over in-process with lchown instead:
// there is nothing in it to walk, and no other uid can have put anything there (it is the
// host's, mode 0700), while spawning chown from the host costs a fork of the host process
// (15-40 ms of the host's loop here, per module, at a first boot).

import { execFile } from "node:child_process";
import { chmod, lchown, lstat, readdir } from "node:fs/promises";

export async function prepareDataDir(dir: string, uid: number, gid: number, chown: string): Promise<void> {
  const st = await lstat(dir);
  if (!st.isDirectory()) throw new Error(`data directory ${dir} is not a directory`);
  if (st.uid !== uid || st.gid !== gid) {
    const ours = st.uid === process.getuid?.() && (st.mode & 0o077) === 0;
    if (ours && (await readdir(dir)).length === 0) {
      await lchown(dir, uid, gid);
      if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
      return;
    }
    await new Promise<void>((resolve, reject) => {
      execFile(chown, ["-R", "-P", "-h", "--", `${uid}:${gid}`, dir], { env: {}, timeout: 60_000 }, (err, _out, stderr) => {
        if (err) reject(new Error(`could not hand ${dir} to uid ${uid}: ${String(stderr).trim() || err.message}`));
        else resolve();
      });
    });
  }
  // Nobody else's business (other module uids included).
  if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
}
