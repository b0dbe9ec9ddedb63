// One file: the volume's steps (make, grow, check, mount, unmount, recover a held one) share
// its image's state and are read together to see the quota holds at each.
//
// A module's data volume: an ext4 file system in a sparse image file, loop-mounted (nosuid,
// nodev, noexec) on the module's data directory, so that the kernel holds the module to its
// quota: a write past it fails with ENOSPC, and nothing past it is written.
//
// Where: `<data_dir>/.volumes/NAME.ext4` (directory 0700, image 0600, both root's); the module's
// uid owns the file system's root directory (runtime/sandbox/datadir.ts), never the image.
//
// The bound, exactly: ext4 counts blocks of 4 KiB, data and metadata the module causes (its
// directories, extent blocks) alike. The module runs under its own uid, not root, so the
// file system's reserved blocks are out of its reach: at each mount the reserve is set so that
// what the module may use, used blocks included, is floor(max_data_bytes / 4096) blocks (the
// file system's own overhead — inode tables, journal, bitmaps — is outside that count, and so
// is ext4's own reserve for delayed allocation). Inodes: `max_data_files` + the 10 that ext4
// keeps for itself, rounded up by mkfs to fill its inode tables (at most 16 more per block group
// of 128 MiB); the host checks the exact count (host/data-quota.ts).
//
// Lifecycle: mounted before the module's sandbox is built, unmounted once its process is gone;
// a host killed with -9 leaves its mounts, which the next host start unmounts (cleanStale)
// before any module starts. A mount never reuses an image that a loop device still holds.

import { chmod, lstat, mkdir, open, readFile, readdir, realpath, rename, rm, rmdir, stat, statfs, truncate } from "node:fs/promises";
import { constants } from "node:fs";
import { access } from "node:fs/promises";
import path from "node:path";
import { runTool, toolFailure } from "./tool-runner.ts";

/** The directory of the images, inside the data root. */
export const VOLUMES_DIR = ".volumes";
const BLOCK = 4096;
/** Inodes ext4 keeps for itself (1-10; lost+found, 11, is removed at creation). */
const RESERVED_INODES = 10;
const TOOLS = ["mkfs.ext4", "tune2fs", "resize2fs", "e2fsck", "mount", "umount", "losetup", "cp"] as const;
type Tool = (typeof TOOLS)[number];
const SYSTEM_DIRS = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

let tools: Promise<Record<Tool, string> | string> | undefined;

/** The tools, or why volumes cannot be made here (not root, no loop devices, a tool missing). */
export function volumeTools(): Promise<Record<Tool, string> | string> {
  tools ??= (async () => {
    if (process.getuid?.() !== 0) return "the host is not root (mounting needs root)";
    if (!(await access("/dev/loop-control", constants.W_OK).then(() => true, () => false))) return "there are no loop devices (/dev/loop-control)";
    const found: Partial<Record<Tool, string>> = {};
    for (const t of TOOLS) {
      for (const dir of SYSTEM_DIRS) {
        if (await access(`${dir}/${t}`, constants.X_OK).then(() => true, () => false)) {
          found[t] = `${dir}/${t}`;
          break;
        }
      }
      if (!found[t]) return `${t} is missing (e2fsprogs, util-linux)`;
    }
    return found as Record<Tool, string>;
  })();
  return tools;
}

/** Run a tool in the tool runner (runtime/sandbox/tool-runner.ts: no fork of the host's process on its loop). */
async function run(cmd: string, args: string[], timeoutMs = 60_000, okCodes: number[] = [0]): Promise<void> {
  const call = { file: cmd, args, env: { PATH: SYSTEM_DIRS.join(":") }, timeoutMs };
  const failed = toolFailure(call, await runTool(call), okCodes);
  if (failed) throw failed;
}

export interface VolumeQuota {
  maxBytes: number;
  maxEntries: number;
}

export interface MountedVolume {
  image: string;
  dir: string;
  device: string;
  /** What happened at this mount, for the log (created, migrated, grown, shrunk). */
  notes: string[];
  /** Unmount (once); resolves when the loop device is free, or after a few seconds with a reason. */
  release(): Promise<void>;
}

export interface VolumeUsage {
  bytes: number;
  entries: number;
}

/** What the module uses of its mounted volume (O(1): the file system's own counts). */
export async function volumeUsage(dir: string): Promise<VolumeUsage> {
  const s = await statfs(dir);
  return { bytes: (s.blocks - s.bfree) * s.bsize, entries: Math.max(0, s.files - s.ffree - RESERVED_INODES) };
}

const imageOf = (root: string, name: string) => path.join(root, VOLUMES_DIR, `${name}.ext4`);

/**
 * The journal of a new image, in MiB: below 1 GiB of quota given to mkfs (-J size=4), so that
 * the image's size counts the journal it gets. mkfs's own choice follows the image's size: it
 * chose 4 MiB where 32 were counted, which left a quota of 8-24 MiB an image too large to
 * reserve the rest of (such a module never started). A small journal also lets a volume shrink
 * to a small quota later (resize2fs cannot shrink a journal). From 1 GiB, mkfs chooses by the
 * image's size (32 MiB up to 2 GiB, 64 MiB up to 16 GiB: within the 128 MiB counted), and any
 * difference is a small fraction of the quota.
 */
function journalMiB(q: VolumeQuota): { counted: number; forced: boolean } {
  const small = Math.ceil(q.maxBytes / BLOCK) * BLOCK < 1024 * 1024 * 1024;
  return small ? { counted: 4, forced: true } : { counted: 128, forced: false };
}

/** The size to give a new image: the quota, the inode tables, the journal, and slack for the rest. */
function imageBytes(q: VolumeQuota): number {
  const data = Math.ceil(q.maxBytes / BLOCK) * BLOCK;
  return data + (q.maxEntries + RESERVED_INODES + 64) * 256 + journalMiB(q).counted * 1024 * 1024 + Math.ceil(data / 32) + 2 * 1024 * 1024;
}

/** A mount; `seq` (a mount of ours): its loop device's diskseq when mounted, which the kernel changes at every attach. */
interface MountEntry { id: string; device: string; mountpoint: string; seq?: string }

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

async function mounts(): Promise<MountEntry[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8");
  return text.split("\n").filter(Boolean).map((line) => {
    const f = line.split(" ");
    const dash = f.indexOf("-");
    return { id: f[0] ?? "", device: f[dash + 2] ?? "", mountpoint: unescapeMount(f[4] ?? "") };
  });
}

/** Loop devices whose backing file is `image` (a loop device outlives its mount until every namespace lets go). */
export async function loopDevicesOf(image?: string): Promise<string[]> {
  const out: string[] = [];
  for (const dev of await readdir("/sys/block").catch(() => [] as string[])) {
    if (!dev.startsWith("loop")) continue;
    const backing = (await readFile(`/sys/block/${dev}/loop/backing_file`, "utf8").catch(() => "")).trim();
    if (!backing) continue;
    if (image === undefined || backing === image || backing === `${image} (deleted)`) out.push(`/dev/${dev}`);
  }
  return out;
}

/** A loop device's disk sequence number ("" where the kernel has none): a new one at every attach. */
const diskSeq = (device: string): Promise<string> => readFile(`/sys/block/${path.basename(device)}/diskseq`, "utf8").then((s) => s.trim(), () => "");

/**
 * Wait until no loop device (or not `own`'s) holds `image`; returns those that still do. `own`'s
 * device is only its own while its diskseq is the one it had when mounted: once the kernel freed
 * it, the same name may be attached to the same image by someone else (another host, an
 * operator's losetup), whose device is not ours to detach.
 */
async function waitLoopFree(image: string, ms: number, own?: MountEntry): Promise<string[]> {
  const until = Date.now() + ms;
  const ours = async (d: string) => own === undefined || (d === own.device && (!own.seq || (await diskSeq(d)) === own.seq));
  // The kernel frees an autoclear loop device shortly after the last unmount: look again soon, then less often.
  for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
    const held: string[] = [];
    for (const d of await loopDevicesOf(image)) if (await ours(d)) held.push(d);
    if (held.length === 0 || Date.now() >= until) return held;
    await new Promise((r) => setTimeout(r, pause));
  }
}

/**
 * Unmount the mount `id` on `dir`: busy (a file the host's file API holds open for a moment) is
 * tried again for a second, then detached lazily (the kernel finishes when the last file closes;
 * the loop device goes then, and a new mount waits for it).
 */
async function umountOnce(t: Record<Tool, string>, dir: string, id: string): Promise<void> {
  const gone = async () => !(await mounts()).some((m) => m.id === id);
  for (let i = 0; i < 10; i++) {
    const err = await run(t.umount, [dir]).then(() => null, (e: Error) => e);
    if (!err || (await gone())) return;
    if (!/busy/i.test(err.message)) throw err;
    await new Promise((r) => setTimeout(r, 100));
  }
  await run(t.umount, ["-l", dir]);
}

/**
 * Unmount `dir` and free the loop devices: an owner's release (`own`) touches only its own mount
 * and device, never one another instance or host may have; without it (a dead host's leftovers,
 * under this host's lock), whatever is stacked there and every device of the image.
 */
async function unmount(t: Record<Tool, string>, dir: string, image: string, own?: MountEntry): Promise<string[]> {
  for (;;) {
    const top = (await mounts()).filter((m) => m.mountpoint === dir).at(-1);
    if (!top || (own !== undefined && top.id !== own.id)) break;
    await umountOnce(t, dir, top.id);
  }
  const held = await waitLoopFree(image, 5000, own);
  // No namespace holds the file system any more, but a loop device without autoclear (a host
  // killed between attach and mount) would: detach it.
  for (const dev of held) await run(t.losetup, ["-d", dev]).catch(() => undefined);
  return held;
}

/** Unmount the volumes that a host killed with -9 left under `root` (and free their loop devices); returns their names. */
export async function cleanStaleVolumes(rootPath: string): Promise<string[]> {
  const t = await volumeTools();
  if (typeof t === "string") return [];
  const root = await realpath(rootPath).catch(() => path.resolve(rootPath));
  const vols = path.resolve(root, VOLUMES_DIR);
  const images = (await readdir(vols).catch(() => [] as string[])).filter((f) => f.endsWith(".ext4") || f.endsWith(".ext4.new"));
  const cleaned: string[] = [];
  for (const m of await mounts()) {
    const name = path.basename(m.mountpoint);
    const ours = path.dirname(m.mountpoint) === path.resolve(root) || path.dirname(m.mountpoint) === vols;
    if (!ours || !m.device.startsWith("/dev/loop")) continue;
    const backing = (await readFile(`/sys/block/${path.basename(m.device)}/loop/backing_file`, "utf8").catch(() => "")).trim();
    if (!backing.startsWith(vols + path.sep)) continue;
    await unmount(t, m.mountpoint, backing);
    cleaned.push(name);
  }
  for (const f of images) {
    const image = path.join(vols, f);
    for (const dev of await loopDevicesOf(image)) {
      await run(t.losetup, ["-d", dev]).catch(() => undefined);
      cleaned.push(f);
    }
  }
  return cleaned;
}

/** The reserve (root-only blocks) that leaves the module exactly `quotaBlocks`, used ones included. */
async function setReserve(t: Record<Tool, string>, dir: string, device: string, image: string, quotaBlocks: number): Promise<"ok" | "small" | "large"> {
  const s = await statfs(dir);
  const resv = Number((await readFile(`/sys/fs/ext4/${path.basename(device)}/reserved_clusters`, "utf8").catch(() => "0")).trim()) || 0;
  const total = Math.floor((await stat(image)).size / BLOCK);
  const want = s.blocks - resv - quotaBlocks;
  if (want < 0) return "small";
  if (want > Math.floor(total / 2)) return "large"; // tune2fs allows at most half
  // bavail = bfree - reserve - resv while that is positive: the reserve in force, read without a fork.
  const current = s.bavail > 0 ? s.bfree - s.bavail - resv : NaN;
  if (want !== current) await run(t.tune2fs, ["-r", String(want), device]);
  return "ok";
}

/**
 * How long a mount waits for the image's loop device of an earlier mount to go. The kernel frees
 * an autoclear loop device once the last reference to its file system is gone and its dirty
 * pages are written back, which under load takes seconds: at load ~20 a load right after an
 * unload was once refused after 5 s (test/hostile-round21.test.ts). Past this, something else
 * holds it (another host's mount, a process of an earlier instance): the start fails naming it.
 */
export const LOOP_FREE_WAIT_MS = 15_000;
/** How many of the processes holding a volume's file system an error names (the rest are counted). */
const MAX_HOLDERS_NAMED = 8;
/**
 * How long the look for them may take: one stat per open file of every process on the machine,
 * each a job on libuv's pool, is seconds on a machine of many processes. Past it, what was found
 * is named and the rest is said to be unknown.
 */
const HOLDERS_SCAN_MS = 2000;

/**
 * The numbers of `device` (/sys/block/loopN/dev): the st_dev a file on its file system has
 * (glibc's makedev) and the `major:minor` a mapping of such a file shows in /proc/PID/maps.
 */
async function devNumbers(device: string): Promise<{ dev: number; maps: string } | undefined> {
  const m = /^(\d+):(\d+)$/.exec((await readFile(`/sys/block/${path.basename(device)}/dev`, "utf8").catch(() => "")).trim());
  if (!m) return undefined;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const dev = (minor & 0xff) + (major & 0xfff) * 0x100 + Math.floor(minor / 0x100) * 0x100000 + Math.floor(major / 0x1000) * 2 ** 44;
  return { dev, maps: ` ${major.toString(16).padStart(2, "0")}:${minor.toString(16).padStart(2, "0")} ` };
}

/**
 * The processes that keep a file system on `devices` busy (a working directory, root, open file
 * or mapping on it), as `pid (comm)`, at most MAX_HOLDERS_NAMED and a count of the rest. Read from
 * /proc, one await per file looked at, so the loop is never held, for at most HOLDERS_SCAN_MS;
 * only on a failure path (a volume still held past its wait). A lazily detached file system is
 * found too: its files keep their st_dev.
 */
async function volumeHolders(devices: string[]): Promise<string[]> {
  const nums = (await Promise.all(devices.map(devNumbers))).filter((d) => d !== undefined);
  if (nums.length === 0) return [];
  const devs = new Set(nums.map((n) => n.dev));
  const found: string[] = [];
  let more = 0;
  const until = Date.now() + HOLDERS_SCAN_MS;
  for (const pid of (await readdir("/proc").catch(() => [] as string[])).filter((p) => /^\d+$/.test(p))) {
    if (Date.now() > until) {
      found.push(`(stopped looking after HOLDERS_SCAN_MS, ${HOLDERS_SCAN_MS / 1000} s)`);
      break;
    }
    const onIt = async (p: string) => devs.has((await stat(p).catch(() => null))?.dev ?? -1);
    let holds = (await onIt(`/proc/${pid}/cwd`)) || (await onIt(`/proc/${pid}/root`));
    if (!holds) holds = await readFile(`/proc/${pid}/maps`, "utf8").then((m) => nums.some((n) => m.includes(n.maps)), () => false);
    if (!holds) {
      for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
        if (Date.now() > until) break;
        if (await onIt(`/proc/${pid}/fd/${fd}`)) { holds = true; break; }
      }
    }
    if (!holds) continue;
    if (found.length >= MAX_HOLDERS_NAMED) { more++; continue; }
    const comm = (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "?")).trim();
    found.push(`${pid} (${JSON.stringify(comm).slice(1, -1)})`);
  }
  if (more > 0) found.push(`${more} more`);
  return found;
}

/** Why `image` is still held by `devices`: the devices and the processes on its file system, for an error or a warning. */
async function heldReason(image: string, devices: string[]): Promise<string> {
  const holders = await volumeHolders(devices);
  return `its volume ${image} is still held by ${devices.join(", ")} ${holders.length > 0 ? `through processes on its file system: ${holders.join(", ")}` : "(no process has a file on it: a mount elsewhere, another host's, a loop device attached by hand with losetup, or the kernel still writing it back)"}`;
}

async function mountImage(t: Record<Tool, string>, image: string, dir: string): Promise<MountEntry> {
  const held = await waitLoopFree(image, LOOP_FREE_WAIT_MS);
  if (held.length > 0) throw new Error(`${await heldReason(image, held)}, after waiting LOOP_FREE_WAIT_MS (${LOOP_FREE_WAIT_MS / 1000} s, runtime/sandbox/volume.ts): stop those processes (or unmount it there), then load the module again`);
  await run(t.mount, ["-t", "ext4", "-o", "loop,nosuid,nodev,noexec", image, dir]);
  const m = (await mounts()).filter((e) => e.mountpoint === dir).at(-1);
  if (!m) throw new Error(`mounting ${image} on ${dir} left no mount`);
  if (m.device.startsWith("/dev/loop")) m.seq = await diskSeq(m.device);
  await dropLostFound(dir);
  return m;
}

/**
 * Remove the file system's own lost+found: mkfs makes one, and so does e2fsck before a resize
 * where there is none. Left there, a root-owned directory would appear among the module's files
 * and count against max_data_files. Only an empty one owned by root goes: the module's own
 * directories are its uid's (the file API hands what it makes to the module's uid too).
 */
async function dropLostFound(dir: string): Promise<void> {
  const lf = path.join(dir, "lost+found");
  const st = await lstat(lf).catch(() => null);
  if (st?.isDirectory() && st.uid === 0) await rmdir(lf).catch(() => undefined); // not empty: kept
}

/** Fit the (unmounted) image to the quota: grown or shrunk offline (e2fsck first, as resize2fs asks). */
async function resizeImage(t: Record<Tool, string>, image: string, target: number): Promise<void> {
  const size = (await stat(image)).size;
  await run(t.e2fsck, ["-f", "-p", image], 600_000, [0, 1]);
  if (target > size) await truncate(image, target);
  await run(t.resize2fs, [image, `${Math.floor(target / 1024)}K`], 600_000);
  if (target < size) await truncate(image, target);
}

async function createImage(t: Record<Tool, string>, image: string, q: VolumeQuota): Promise<void> {
  await rm(image, { force: true });
  const fh = await open(image, "wx", 0o600);
  await fh.close();
  await truncate(image, imageBytes(q));
  await run(t["mkfs.ext4"], ["-q", "-F", "-m", "0", "-b", String(BLOCK), "-N", String(q.maxEntries + RESERVED_INODES + 1), ...(journalMiB(q).forced ? ["-J", `size=${journalMiB(q).counted}`] : []), "-E", "root_owner=0:0", image]);
}

/** Mount a fresh image at a private mountpoint (its lost+found removed, as at every mount), make its root 0700. */
async function withFresh<T>(t: Record<Tool, string>, image: string, mnt: string, fn: (mnt: string) => Promise<T>): Promise<T> {
  await mkdir(mnt, { recursive: true, mode: 0o700 });
  await mountImage(t, image, mnt);
  try {
    await chmod(mnt, 0o700);
    return await fn(mnt);
  } finally {
    await unmount(t, mnt, image);
    await rmdir(mnt).catch(() => undefined);
  }
}

/**
 * Finish or undo a migration a crash interrupted. The steps (each a rename, so a kill -9
 * anywhere leaves one of these states): the old files copied into NAME.ext4.new, the directory
 * renamed to NAME.old, an empty directory made, NAME.ext4.new renamed to NAME.ext4 (the commit),
 * NAME.old removed.
 */
/**
 * A new image for the one mounted on `dir`, with the inodes `q` needs: made beside it
 * (`NAME.ext4.new`), the files copied in as root with their owners and modes, synced; returns
 * its path. The caller unmounts the old one and renames the new one over it (the commit): a
 * crash before that leaves the old image whole and a `.new` the next start removes
 * (recoverMigration).
 */
async function rebuildImage(t: Record<Tool, string>, image: string, dir: string, vols: string, name: string, q: VolumeQuota): Promise<string> {
  const fresh = `${image}.new`;
  try {
    await createImage(t, fresh, q);
    await withFresh(t, fresh, path.join(vols, `${name}.mnt`), (mnt) => run(t.cp, ["-a", "--sparse=always", "--", `${dir}/.`, `${mnt}/`], 600_000));
    const fh = await open(fresh, "r+");
    await fh.sync();
    await fh.close();
  } catch (err) {
    await rm(fresh, { force: true });
    throw new Error(`its volume could not be rebuilt for max_data_files = ${q.maxEntries} (the old one is kept): ${(err as Error).message}`);
  }
  return fresh;
}

async function recoverMigration(vols: string, name: string, dir: string): Promise<void> {
  const image = path.join(vols, `${name}.ext4`);
  const old = path.join(vols, `${name}.old`);
  const hasOld = await stat(old).then(() => true, () => false);
  if (hasOld) {
    if (await stat(image).then(() => true, () => false)) {
      await rm(old, { recursive: true, force: true }); // committed: the files are in the volume
    } else {
      await rmdir(dir).catch((err: NodeJS.ErrnoException) => { if (err.code !== "ENOENT") throw err; });
      await rename(old, dir); // not committed: the directory as it was; the migration is redone
    }
  }
  await rm(`${image}.new`, { force: true });
}

async function isEmpty(dir: string): Promise<boolean> {
  return (await readdir(dir)).length === 0;
}

/**
 * Mount the module's volume on `dir` (made if needed), creating its image (or moving an existing
 * directory's files into a new one), and fitting it to the quota (grown online, shrunk offline).
 * Throws with what went wrong; the caller decides whether the module falls back to scans.
 */
export async function mountVolume(rootPath: string, name: string, q: VolumeQuota): Promise<MountedVolume> {
  const t = await volumeTools();
  if (typeof t === "string") throw new Error(t);
  // The kernel's mount table names real paths (no symbolic links).
  await mkdir(rootPath, { recursive: true, mode: 0o700 });
  const root = await realpath(rootPath);
  const vols = path.resolve(root, VOLUMES_DIR);
  const dir = path.resolve(root, name);
  const image = imageOf(path.resolve(root), name);
  // The last instance's unmount comes after its exit is handled: wait for it (bounded), then
  // do it in its place; never stack a mount on it.
  const last = live.get(dir);
  if (last) {
    await Promise.race([last.released, new Promise((r) => setTimeout(r, RELEASE_WAIT_MS).unref())]);
    // Still held: said by its owner's release; the mount below waits for it.
    await last.release().catch(() => undefined);
  }
  await mkdir(vols, { recursive: true, mode: 0o700 });
  await chmod(vols, 0o700);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await recoverMigration(vols, name, dir);
  // A mount left on the directory (an earlier instance whose release failed): not stacked twice.
  if ((await mounts()).some((m) => m.mountpoint === dir)) await unmount(t, dir, image);
  const notes: string[] = [];
  const quotaBlocks = Math.floor(q.maxBytes / BLOCK);
  if (!(await stat(image).then(() => true, () => false))) {
    const fresh = `${image}.new`;
    await createImage(t, fresh, q);
    const migrate = !(await isEmpty(dir));
    // Into the new file system as root (the reserve is not set yet): the fit is checked at mount.
    // Nothing to copy, no mount of its own: its root is made private at the mount below.
    if (migrate) await withFresh(t, fresh, path.join(vols, `${name}.mnt`), (mnt) => run(t.cp, ["-a", "--sparse=always", "--", `${dir}/.`, `${mnt}/`], 600_000));
    const fh = await open(fresh, "r+");
    await fh.sync();
    await fh.close();
    if (migrate) {
      await rename(dir, path.join(vols, `${name}.old`));
      await mkdir(dir, { mode: 0o700 });
    }
    await rename(fresh, image); // the commit
    if (migrate) await rm(path.join(vols, `${name}.old`), { recursive: true, force: true });
    notes.push(migrate ? "its existing data directory was moved into a new volume" : "new volume");
  } else if (!(await isEmpty(dir))) {
    throw new Error(`its data directory ${dir} holds files beside its volume ${image}: move them into the volume (mount it, see the operator guide) or away`);
  }
  let mounted = await mountImage(t, image, dir);
  const release = async () => unmount(t, dir, image, mounted);
  try {
    // A new file system's root is mkfs's (root's, 0755): private before anything else sees it,
    // as prepareDataDir hands a private empty directory over without walking it. (After a kill
    // -9 before this, the next start finds it open and hands it over with chown -R: also right.)
    const top = await lstat(dir);
    if (top.uid === 0 && (top.mode & 0o077) !== 0) await chmod(dir, 0o700);
    // Too few inodes for a raised max_data_files (the count is fixed when an image is made):
    // a new image with enough, the files copied in, put in place by one rename.
    const inodes = (await statfs(dir)).files;
    if (inodes < q.maxEntries + RESERVED_INODES) {
      const fresh = await rebuildImage(t, image, dir, vols, name, q);
      await release();
      await rename(fresh, image); // the commit
      notes.push(`rebuilt with ${q.maxEntries} entries for max_data_files = ${q.maxEntries} (it had ${inodes - RESERVED_INODES})`);
      mounted = await mountImage(t, image, dir);
    }
    for (let tries = 0; ; tries++) {
      const fit = await setReserve(t, dir, mounted.device, image, quotaBlocks);
      if (fit === "ok") break;
      if (tries >= 2) throw new Error(`could not fit its volume ${image} to max_data_bytes = ${q.maxBytes}`);
      // Too small for a raised quota, or too large to reserve the rest (tune2fs allows half):
      // resized offline (the online resize of ext4 is refused on this kind of machine).
      await release();
      const target = fit === "small" ? Math.max(Math.ceil((await stat(image)).size * 1.05 / BLOCK) * BLOCK, imageBytes(q)) : imageBytes(q);
      try {
        await resizeImage(t, image, target);
      } catch (err) {
        throw new Error(`its volume cannot be resized to ${target} bytes for max_data_bytes = ${q.maxBytes}${fit === "large" ? " (it holds more than that)" : ""}: ${(err as Error).message}`);
      }
      notes.push(`${fit === "small" ? "grown" : "shrunk"} to ${target} bytes for max_data_bytes = ${q.maxBytes}`);
      mounted = await mountImage(t, image, dir);
    }
  } catch (err) {
    await release().catch(() => undefined);
    throw err;
  }
  let released: Promise<void> | undefined;
  let resolve!: () => void;
  // The owner's release, after its processes are gone: a device still held past the unmount's
  // wait is named with what holds it (the next start waits LOOP_FREE_WAIT_MS for it, then fails).
  const ownerRelease = async () => {
    const held = await unmount(t, dir, image, mounted);
    const still = [];
    for (const d of held) if (d === mounted.device && (!mounted.seq || (await diskSeq(d)) === mounted.seq) && (await loopDevicesOf(image)).includes(d)) still.push(d);
    if (still.length > 0) throw new Error(`unmounted (detached lazily), but ${await heldReason(image, still)}; its next start waits LOOP_FREE_WAIT_MS (${LOOP_FREE_WAIT_MS / 1000} s) for it`);
  };
  const entry: Live = {
    released: new Promise<void>((r) => (resolve = r)),
    release: () => (released ??= ownerRelease().finally(() => {
      resolve();
      if (live.get(dir) === entry) live.delete(dir);
    })),
  };
  live.set(dir, entry);
  return { image, dir, device: mounted.device, notes, release: entry.release };
}

interface Live {
  /** Resolved once its owner has released it. */
  released: Promise<void>;
  release(): Promise<void>;
}
/** The volumes this process has mounted, by directory. */
const live = new Map<string, Live>();
/** How long a new mount waits for the last instance's unmount (its process's exit is handled first). */
const RELEASE_WAIT_MS = 30_000;
/** How long the host's shutdown waits for its modules' exits to release their volumes before it does. */
const SHUTDOWN_WAIT_MS = 10_000;

/** At the host's shutdown (its modules stopped): every volume under `root` released, by its owner or, after SHUTDOWN_WAIT_MS, here. */
export async function volumesReleased(rootPath: string): Promise<void> {
  const root = await realpath(rootPath).catch(() => path.resolve(rootPath));
  const under = () => [...live].filter(([dir]) => path.dirname(dir) === root).map(([, v]) => v);
  await Promise.race([Promise.all(under().map((v) => v.released)), new Promise((r) => setTimeout(r, SHUTDOWN_WAIT_MS).unref())]);
  await Promise.allSettled(under().map((v) => v.release()));
}
