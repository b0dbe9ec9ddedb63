// The data directory: the one place a sandboxed module may write, so it must belong to the
// module's uid. Handed over with `chown -R` (coreutils walks the tree without following
// symlinks, with openat and O_NOFOLLOW, so a link the module left behind cannot redirect the
// root-run chown to a host file), and only when the directory's owner is not already the
// module's uid: the first start, or after the uid changed. A directory the host has just made
// (owned by the host's own uid, still empty) is handed over in-process with lchown instead:
// there is nothing in it to walk, and no other uid can have put anything there (it is the
// host's, mode 0700), and chown runs in the tool runner (runtime/sandbox/tool-runner.ts), not
// as a fork of the host process (15-40 ms of the host's loop here, per module, at a first boot).

import { chmod, lchown, lstat, readdir } from "node:fs/promises";
import { runTool, toolFailure } from "./tool-runner.ts";

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
    const call = { file: chown, args: ["-R", "-P", "-h", "--", `${uid}:${gid}`, dir], timeoutMs: 60_000 };
    const failed = toolFailure(call, await runTool(call));
    if (failed) throw new Error(`could not hand ${dir} to uid ${uid}: ${failed.message}`);
  }
  // Nobody else's business (other module uids included).
  if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
}
