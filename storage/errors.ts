/** Error type thrown by every storage operation; `code` is stable and machine-readable. */
export type StorageErrorCode = "quota_exceeded" | "invalid_params" | "not_found" | "storage_error";

export class StorageError extends Error {
  readonly code: StorageErrorCode;

  constructor(code: StorageErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StorageError";
    this.code = code;
  }
}

/** Wraps anything that is not already a StorageError (LevelDB / IO failures) as `storage_error`. */
export function asStorageError(err: unknown): StorageError {
  if (err instanceof StorageError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new StorageError("storage_error", `storage operation failed: ${msg}`, { cause: err });
}
