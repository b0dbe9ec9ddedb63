import { createRequire } from "node:module";

const pkg = createRequire(import.meta.url)("../package.json") as { version: string };

/** The version of modhost itself, from package.json. */
export const HOST_VERSION: string = pkg.version;
