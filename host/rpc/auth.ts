// Authentication for the RPC server, as bitcoind does it: at start the host writes a random
// cookie, `__cookie__:<64 hex>`, to the cookie file with mode 0600, so whoever can read that
// file (the operator's user) can call the host; at stop the file is removed. Optionally the
// operator also configures a user and password. Clients send HTTP Basic authentication with
// either. Comparisons are constant-time.

import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmod, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";

export const COOKIE_USER = "__cookie__";

export interface AuthOptions {
  cookieFile: string;
  user?: string;
  password?: string;
}

export interface Credentials {
  user: string;
  password: string;
}

/** SHA-256 of a string (one call: hashing keeps the comparison constant-time whatever the lengths). */
function digest(text: string): Buffer {
  return hash("sha256", text, "buffer");
}

/** `Authorization: Basic ...` -> user and password; undefined when absent or malformed. */
function parseBasic(header: string | undefined): Credentials | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon < 0) return undefined;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.user}:${c.password}`, "utf8").toString("base64")}`;
}

export class RpcAuth {
  private cookieWritten = false;
  private portText = "";
  /** Digests of the accepted `user:password` texts, taken once: a check then hashes once. */
  private readonly cookieDigest: Buffer;
  private readonly passwordDigest: Buffer | undefined;

  private constructor(private readonly opts: AuthOptions, readonly cookie: string) {
    this.cookieDigest = digest(`${COOKIE_USER}:${cookie}`);
    const { user, password } = opts;
    // Basic credentials split at the first colon, so a user name with a colon never matches.
    this.passwordDigest = user !== undefined && password !== undefined && !user.includes(":") ? digest(`${user}:${password}`) : undefined;
  }

  /** New random cookie (not yet written). */
  static create(opts: AuthOptions): RpcAuth {
    return new RpcAuth(opts, randomBytes(32).toString("hex"));
  }

  get cookieFile(): string {
    return this.opts.cookieFile;
  }

  /**
   * Write `__cookie__:<hex>` with mode 0600, and the port the server listens on beside it
   * (`<cookie_file>.port`): each to a temporary file first, then renamed into place, so a
   * reader never sees a half-written one.
   */
  async writeCookie(port: number): Promise<void> {
    const file = this.opts.cookieFile;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await replaceFile(file, `${COOKIE_USER}:${this.cookie}`);
    // The port the server listens on, for clients of a host configured with `port = 0`.
    this.portText = `${port}\n`;
    await replaceFile(portFileOf(file), this.portText);
    this.cookieWritten = true;
  }

  /** Remove the cookie file and its port file, if they are still the ones this host wrote. */
  async removeCookie(): Promise<void> {
    if (!this.cookieWritten) return;
    this.cookieWritten = false;
    const ours = [[this.opts.cookieFile, `${COOKIE_USER}:${this.cookie}`], [portFileOf(this.opts.cookieFile), this.portText.trim()]] as const;
    for (const [file, text] of ours) {
      try {
        if ((await readFile(file, "utf8")).trim() === text) await rm(file, { force: true });
      } catch {
        // already gone
      }
    }
  }

  /** Whether the Authorization header carries the cookie or the configured user and password. */
  check(header: string | undefined): boolean {
    const c = parseBasic(header);
    if (!c) return false;
    // One digest of what was sent, compared with both (always both: the time taken does not
    // say which one matched); equal digests mean equal user and equal password.
    const sent = digest(`${c.user}:${c.password}`);
    const byCookie = timingSafeEqual(sent, this.cookieDigest);
    const byPassword = this.passwordDigest !== undefined && timingSafeEqual(sent, this.passwordDigest);
    return byCookie || byPassword;
  }
}

/** Read a cookie file: the credentials in it. */
/** Where a host writes the port it listens on: beside its cookie, `<cookie_file>.port`. */
export function portFileOf(cookieFile: string): string {
  return `${cookieFile}.port`;
}

/** Write `text` to a temporary file with mode 0600, then rename it into place: never half-written. */
async function replaceFile(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp`;
  await rm(tmp, { force: true });
  await writeFile(tmp, text, { mode: 0o600, flag: "wx" });
  await chmod(tmp, 0o600);
  await rename(tmp, file);
}

export async function readCookie(file: string): Promise<Credentials> {
  const text = (await readFile(file, "utf8")).trim();
  const colon = text.indexOf(":");
  if (colon < 0) throw new Error(`${file} is not a modhost cookie file`);
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}
