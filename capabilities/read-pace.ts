// Pacing of small reads from a remote party (an HTTP server behind http_request, a DNS server
// answering over TCP). Each read costs the host's loop ~10-40 µs whatever its size (a Buffer, an
// event, a parser's turn), and a party writing one byte at a time made the host read one byte
// per read, as fast as it wrote. A ReadPace allows `burst` small reads at once, then `perSecond`:
// past them its reader stops reading the socket (a socket with a high-water mark of one byte
// stops reading the kernel at once) until the next is due, and the bytes that came meanwhile
// come in one read.

import { performance } from "node:perf_hooks";

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
