// Durability of renames: a rename is on disk only once its directory is fsynced (a kill -9
// cannot undo a rename; a power cut can, until then).

import { open } from "node:fs/promises";

/** fsync a file or directory (directories: makes the renames and creations in it durable). */
export async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
