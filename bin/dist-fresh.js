// Whether dist/ (scripts/build-dist.mjs) may run instead of the TypeScript sources: it was
// built from the sources exactly as they are now (size and mtime of each), in this checkout,
// by this Node. Plain JavaScript: bin/modhost.js calls it before anything is compiled.
import { readFileSync, statSync } from "node:fs";
import path from "node:path";

/** `root`: the checkout (absolute). */
export function distIsFresh(root, nodeVersion = process.version) {
  let build;
  try {
    build = JSON.parse(readFileSync(path.join(root, "dist", "build.json"), "utf8"));
  } catch {
    return false; // not built
  }
  if (build.node !== nodeVersion || path.resolve(build.root) !== path.resolve(root)) return false;
  if (!build.sources || typeof build.sources !== "object") return false;
  for (const [rel, [size, mtime]] of Object.entries(build.sources)) {
    try {
      const st = statSync(path.join(root, rel));
      if (st.size !== size || Math.floor(st.mtimeMs) !== mtime) return false;
    } catch {
      return false;
    }
  }
  return true;
}
