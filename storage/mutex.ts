/**
 * Minimal FIFO async mutex: `run(fn)` executes `fn` only after every previously
 * queued `fn` has settled. A rejection of one task does not poison the queue.
 */
export class Mutex {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn);
    // The next task waits for this one to settle, whatever the outcome.
    this.#tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
