// What the runtimes need from the host, and no more: narrow inputs instead of the host's own
// types, so that runtime/ never imports host/ (docs/architecture.md, the import direction).
// host/manifest.ts ModuleManifest and host/config.ts Limits carry these fields and more; they
// are passed as they are.

/** The parts of a module's manifest that running it needs. */
export interface RuntimeManifest {
  readonly name: string;
  readonly version: string;
  /** Absolute. */
  readonly dir: string;
  readonly entry_point: string;
}

/** The limits an isolate host is started with (see host/config.ts for each one's meaning). */
export interface IsolateHostLimits {
  readonly memory_mb: number;
  readonly cpu_time_ms: number;
  readonly start_timeout_ms: number;
  readonly handler_timeout_ms: number;
  /** The host's health check deadline: sync crossings only where it exceeds their longest hold (isolate/runtime.ts syncCrossingsFor). */
  readonly health_timeout_ms?: number;
  /** Development only: a loopback address turns the V8 inspector on ("" or absent: off). */
  readonly inspect?: string;
  readonly address_space_mb: number;
  readonly open_files: number;
  readonly processes: number;
  readonly cpu_seconds: number;
  readonly file_size_mb: number;
  readonly memory_total_mb: number;
  readonly cpu_weight: number;
  readonly cpu_max_percent: number;
}
