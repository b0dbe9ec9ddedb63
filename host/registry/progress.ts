// A one-line download progress bar on stderr, drawn only when stderr is a terminal.

export interface ProgressSink {
  isTTY?: boolean;
  columns?: number;
  write(text: string): unknown;
}

function mb(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

export class Progress {
  private done = 0;
  private label = "";
  private lastDraw = 0;
  private drawn = false;

  constructor(
    private readonly total: number,
    private readonly out: ProgressSink = process.stderr,
    private readonly enabled = Boolean(out.isTTY),
  ) {}

  /** What is being downloaded now. */
  setLabel(label: string): void {
    this.label = label;
    this.draw(true);
  }

  add(bytes: number): void {
    this.done += bytes;
    this.draw(false);
  }

  private draw(force: boolean): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 50 && this.done < this.total) return;
    this.lastDraw = now;
    const width = 24;
    const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const filled = Math.round(frac * width);
    const bar = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${mb(this.done)}/${mb(this.total)} ${this.label}`;
    const cols = this.out.columns ?? 100;
    this.out.write(`\r${bar.slice(0, cols - 1).padEnd(Math.min(cols - 1, bar.length + 2))}`);
    this.drawn = true;
  }

  finish(): void {
    if (!this.enabled || !this.drawn) return;
    this.draw(true);
    this.out.write("\n");
  }
}
