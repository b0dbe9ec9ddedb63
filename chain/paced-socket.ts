// Pacing of small reads from a remote party: an HTTP server behind a module's http_request
// (capabilities/http.ts), a DNS server answering over TCP (capabilities/dns.ts), and the servers
// the host itself asks (the bitcoind JSON-RPC client, chain/bitcoind/rpc.ts, through
// ./paced-http.ts). Here, below all of them (chain/ imports nothing above it).
//
// Each read costs the host's loop ~10-40 µs whatever its size (a Buffer, an
// event, a parser's turn), and a party writing one byte at a time made the host read one byte
// per read, as fast as it wrote. A ReadPace allows `burst` small reads at once, then `perSecond`:
// past them its reader stops reading the socket (a socket with a high-water mark of one byte
// stops reading the kernel at once) until the next is due, and the bytes that came meanwhile
// come in one read.

import type net from "node:net";
import { performance } from "node:perf_hooks";
import { Duplex } from "node:stream";

/**
 * A read of an answer smaller than this (a TLS record's most, 16 KiB) is a small read: small reads
 * are paced. Each read costs the host's loop ~10-40 µs whatever its size (a Buffer, an event, a
 * turn of Node's HTTP parser), and a server writing one byte at a time made the host read one or a
 * few bytes per read, as fast as it could: 200-420 ms of the loop's CPU for one request, in ~0.5-1.2
 * s, until MAX_RESPONSE_READS stopped it (16 in flight per module kept a core busy).
 */
const PACED_READ_BYTES = 16 * 1024;
/**
 * Small reads of one answer per second, after a first SMALL_READ_BURST: past them the socket is
 * not read until the next is due (bytes wait in the kernel, and the next read takes all that came
 * meanwhile: a peer dribbling bytes gets 50 reads a second of the host, whatever it does).
 */
export const SMALL_READS_PER_SECOND = 50;
/**
 * Over TLS, records of an answer that count as one small read. Each record is decrypted on the
 * host's loop (~3-5 µs), and a server sending one byte per record got ~2,800 of them into
 * each read of 64 KiB.
 */
const TLS_RECORDS_PER_READ = 16;
/**
 * Body pieces the parser makes of one read (chunks of a chunked answer) that count as one small
 * read, past the first. A server sending one-byte chunks got ~500 of them into each read of 3 KB
 * (~3 µs each); an answer in chunks of 1 KiB makes ~64 of a read of 64 KiB (one small read more).
 */
const BODY_PIECES_PER_READ = 64;
/** What a TLS record takes on the wire beyond its plaintext (TLS 1.3, AES-GCM; 1.2 takes more, so records are overcounted there, never under). */
const TLS_RECORD_OVERHEAD_BYTES = 22;
/** Longest pause of an answer's reading at a time; then the module's account is asked again. */
const MAX_READ_PAUSE_MS = 1000;
/** Small reads of an answer before pacing starts: an ordinary answer (its head, a few writes of body) is never delayed. */
export const SMALL_READ_BURST = 64;
export class ReadPace {
  #tokens: number;
  #refilled = performance.now();

  constructor(private readonly perSecond: number, private readonly burst: number) {
    this.#tokens = burst;
  }

  /** `reads` small reads done (fractions for what costs a part of one). */
  spend(reads: number, now = performance.now()): void {
    this.#refill(now);
    this.#tokens -= reads;
  }

  /** How long until the next small read is due (ms; 0: now). */
  waitMs(now = performance.now()): number {
    this.#refill(now);
    return this.#tokens < 0 ? (-this.#tokens * 1000) / this.perSecond : 0;
  }

  #refill(now: number): void {
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#refilled) * this.perSecond) / 1000);
    this.#refilled = now;
  }
}

/**
 * The socket as Node's HTTP client sees it: what it reads from the server's socket (plain or TLS),
 * counted by `count` before anything else sees it (false: dropped, the exchange is over), then
 * handed to the client's parser, with small reads paced (PACED_READ_BYTES, SMALL_READS_PER_SECOND).
 * The server's socket itself cannot be paused for this: Node's HTTP client resumes its socket as
 * the answer is read. Here the client pauses and resumes this stream, and only this stream
 * pauses the socket. Over TLS a read is a record; the records that arrive together are handed
 * to the parser as one piece. The time each read costs the loop, the parser's work included,
 * is charged to `account` (the module's host_cpu_ms_per_s).
 */
export class PacedSocket extends Duplex {
  readonly #pace = new ReadPace(SMALL_READS_PER_SECOND, SMALL_READ_BURST);
  /** Reads that came while the socket was being paused (TLS records already decrypted). */
  #held: Buffer[] = [];
  #timer: NodeJS.Timeout | undefined;
  #cipherSeen: number;
  #plainSinceCheck = 0;
  #overhead = 0;
  #recordCheck = false;
  /** Body pieces the parser has made so far (the exchange counts them). */
  bodyPieces = 0;

  /**
   * @param cipherBytes over TLS, the bytes read from the TCP socket under it so far (records
   *   and their overhead): the records a read came in are counted from them.
   */
  constructor(
    private readonly socket: net.Socket,
    private readonly count: (chunk: Buffer) => boolean,
    private readonly account: ((ms: number) => number | undefined) | undefined,
    private readonly cipherBytes: (() => number) | undefined,
  ) {
    super({ allowHalfOpen: false });
    this.#cipherSeen = cipherBytes?.() ?? 0;
    socket.on("data", this.#onData);
    socket.on("end", () => {
      this.#flush();
      this.push(null);
    });
    socket.on("error", (err) => this.destroy(err));
    socket.on("close", () => this.destroy());
  }

  readonly #onData = (chunk: Buffer): void => {
    const t0 = performance.now();
    if (!this.count(chunk)) return;
    this.#held.push(chunk);
    if (chunk.length < PACED_READ_BYTES) this.#pace.spend(1, t0);
    if (this.cipherBytes) {
      this.#plainSinceCheck += chunk.length;
      if (!this.#recordCheck) {
        this.#recordCheck = true;
        setImmediate(this.#checkRecords);
      }
    }
    // While the socket is being paused, reads that still come (TLS records decrypted from the
    // last read) wait for the resume, to go to the parser as one piece.
    if (this.#timer === undefined) this.#flush();
    this.#settle(t0);
  };

  readonly #resume = (): void => {
    const t0 = performance.now();
    this.#timer = undefined;
    this.#flush();
    if (!this.destroyed) this.socket.resume();
    this.#settle(t0);
  };

  /**
   * Over TLS, the records that came since the last look were each decrypted on the loop: every
   * TLS_RECORDS_PER_READ of them count as one more small read. A record is its plaintext plus
   * ~22 bytes on the wire (TLS_RECORD_OVERHEAD_BYTES), so the bytes read from the TCP socket
   * beyond the plaintext say how many came. Looked at once the reads of a turn are done (the
   * records of one TCP read come as several reads, the first seeing all of its bytes), and
   * what was read ahead of its plaintext is offset when that comes.
   */
  readonly #checkRecords = (): void => {
    this.#recordCheck = false;
    if (this.destroyed || !this.cipherBytes) return;
    const cipher = this.cipherBytes();
    this.#overhead += cipher - this.#cipherSeen - this.#plainSinceCheck;
    this.#cipherSeen = cipher;
    this.#plainSinceCheck = 0;
    if (this.#overhead <= 0) return;
    const now = performance.now();
    this.#pace.spend(this.#overhead / TLS_RECORD_OVERHEAD_BYTES / TLS_RECORDS_PER_READ, now);
    this.#overhead = 0;
    this.#settle(now);
  };

  /**
   * Charges the module for the work since `t0`, and stops reading until the next small read is
   * due, or while the module is over its host_cpu_ms_per_s (its account says how long).
   */
  #settle(t0: number): void {
    const now = performance.now();
    const owed = this.account?.(now - t0) ?? 0;
    if (this.#timer !== undefined || this.destroyed) return;
    const wait = Math.max(owed, this.#pace.waitMs(now));
    if (wait <= 0) return;
    // What the kernel gathers meanwhile comes in one read.
    this.socket.pause();
    this.#timer = setTimeout(this.#resume, Math.min(Math.ceil(wait), MAX_READ_PAUSE_MS));
  }

  #flush(): void {
    if (this.#held.length === 0 || this.destroyed) return;
    const piece = this.#held.length === 1 ? this.#held[0]! : Buffer.concat(this.#held);
    this.#held = [];
    const before = this.bodyPieces;
    this.push(piece);
    // The parser made body pieces of it (chunks of a chunked answer): each is an event and a
    // Buffer on the loop (~3 µs). Past the first, every BODY_PIECES_PER_READ count as a small read.
    const extra = this.bodyPieces - before - 1;
    if (extra > 0) this.#pace.spend(extra / BODY_PIECES_PER_READ);
  }

  override _read(): void {
    // Pushed as it is read; what the parser has not taken is bounded by the wire bounds.
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.socket.write(chunk, done);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.socket.end();
    done();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#held = [];
    this.socket.destroy();
    done(err);
  }
}
