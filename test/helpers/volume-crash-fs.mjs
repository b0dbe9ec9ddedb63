// node:fs/promises as runtime/sandbox/volume.ts sees it under test/helpers/volume-crash-child.ts:
// each call that changes the file system is a step (which may be the one the child dies at).
import * as fs from "node:fs/promises";
export * from "node:fs/promises";
const step = (what, fn) => (...args) => {
  globalThis.__volumeStep(`${what} ${String(args[0])}`);
  return fn(...args);
};
export const mkdir = step("mkdir", fs.mkdir);
export const chmod = step("chmod", fs.chmod);
export const rename = step("rename", fs.rename);
export const rm = step("rm", fs.rm);
export const rmdir = step("rmdir", fs.rmdir);
export const truncate = step("truncate", fs.truncate);
export const open = step("open", fs.open);
