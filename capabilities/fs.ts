// Files in the module's own data directory. Paths are relative to it ("" or "." is the
// directory itself); the canonical relative path is the scope target, so a grant such as
// read_filesystem=reports covers reports/... only, and a scoped deny wins. Symbolic links are
// never followed, anywhere on the path; resolution is anchored to open directory fds, so it is
// race-free (fs-path.ts explains how).
import * as v from "valibot";
import { CapabilityError, method, type CallContext, type Family } from "./types.ts";
import { Bytes, DirEntry, FileMetadata, done } from "./schemas.ts";
import {
  deleteAt, listAt, mkdirAt, parsePath, readFileAt, statAt, writeFileAt, MAX_FILE_BYTES, MAX_LIST_ENTRIES,
} from "./fs-path.ts";
import { threadPool } from "../storage/pool.ts";

const filePath = v.string();
const target = (p: { path: string }): string[] => [parsePath(p.path).canonical];
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A file API call's work, each of its system calls a job in libuv's thread pool: it runs once
 * the host's share of the pool (storage/pool.ts) admits it for the module, holding that one
 * place until it is done, so a module's files queue fairly with every module's storage.
 */
function onPool<T>(c: CallContext, fn: () => Promise<T>): Promise<T> {
  return threadPool.run(c.module, fn);
}

function dataDir(c: CallContext): string {
  if (!c.dataDir) throw new CapabilityError("unavailable", "this module has no data directory");
  return c.dataDir;
}

export const fs: Family = {
  name: "fs",
  summary: "Files in the module's own data directory (symbolic links are never followed).",
  methods: [
    method({
      name: "read_file", result: v.union([Bytes, v.string()]), handWritten: { ts: "overloads: encoding \"utf8\" answers a string", rust: "read_file (bytes) and read_file_string (utf8)" }, js: "readFile", permission: "read_filesystem", args: ["path", "encoding"],
      params: v.object({ path: filePath, encoding: v.optional(v.picklist(["utf8", "binary"])) }),
      summary: `Contents of a file: bytes, or a string with encoding "utf8" (at most ${MAX_FILE_BYTES / 1024 / 1024} MiB).`,
      targets: target,
      handler: async (c, p) => {
        const bytes = await onPool(c, () => readFileAt(dataDir(c), parsePath(p.path)));
        if (p.encoding !== "utf8") return bytes;
        try {
          return utf8.decode(bytes);
        } catch {
          throw new CapabilityError("invalid_params", `${JSON.stringify(parsePath(p.path).canonical)} is not valid UTF-8; read it without an encoding to get bytes`);
        }
      },
    }),
    method({
      name: "write_file", result: done, handWritten: { rust: "data as impl AsRef<[u8]>, sent as binary; append_file for append" }, js: "writeFile", permission: "write_filesystem", args: ["path", "data", "options"],
      params: v.object({ path: filePath, data: v.union([v.string(), Bytes]), append: v.optional(v.boolean()) }),
      summary: "Create or replace a file with a string (UTF-8) or bytes; with `append` (ctx: `{ append: true }`) add to its end.",
      targets: target,
      handler: async (c, p) => {
        const data = typeof p.data === "string" ? Buffer.from(p.data, "utf8") : p.data;
        await onPool(c, () => writeFileAt(dataDir(c), parsePath(p.path), data, p.append === true, c.dataUsage));
        return true as const;
      },
    }),
    method({
      name: "delete_file", result: done, js: "deleteFile", permission: "manage_filesystem", args: ["path"], params: v.object({ path: filePath }),
      summary: "Delete a file, a symbolic link (not its target) or an empty directory.",
      audit: true,
      targets: target,
      handler: async (c, p) => { await onPool(c, () => deleteAt(dataDir(c), parsePath(p.path), c.dataUsage)); return true as const; },
    }),
    method({
      name: "list_directory", result: v.array(DirEntry), js: "listDirectory", permission: "read_filesystem", args: ["path"], params: v.object({ path: filePath }),
      summary: `Entries of a directory sorted by name, as { name, type }; type is "file", "directory", "symlink" or "other" (at most ${MAX_LIST_ENTRIES}).`,
      targets: target,
      handler: (c, p) => onPool(c, () => listAt(dataDir(c), parsePath(p.path))),
    }),
    method({
      name: "create_directory", result: done, js: "createDirectory", permission: "manage_filesystem", args: ["path"], params: v.object({ path: filePath }),
      summary: "Create a directory and any missing parents.",
      targets: target,
      handler: async (c, p) => { await onPool(c, () => mkdirAt(dataDir(c), parsePath(p.path), c.dataUsage)); return true as const; },
    }),
    method({
      name: "get_file_metadata", result: FileMetadata, js: "stat", permission: "read_filesystem", args: ["path"], params: v.object({ path: filePath }),
      summary: "{ path, size, is_file, is_directory, modified, created } (milliseconds; created may be null).",
      targets: target,
      handler: (c, p) => onPool(c, () => statAt(dataDir(c), parsePath(p.path))),
    }),
  ],
};
