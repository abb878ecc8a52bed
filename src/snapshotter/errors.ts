/**
 * Errors of the snapshots service, one class per containerd errdefs class. The gRPC layer maps each
 * to the status code containerd's `errdefs.FromGRPC` turns back into the same class; the message
 * ends up only in logs, the code drives containerd's behaviour (AlreadyExists on Prepare means
 * "remote snapshot ready", FailedPrecondition on Remove is skipped by GC, and so on).
 */
import { status } from '@grpc/grpc-js';

export class SnapshotError extends Error {
  constructor(
    message: string,
    public readonly code: status,
  ) {
    super(message);
    this.name = 'SnapshotError';
  }
}

export const notFound = (msg: string): SnapshotError => new SnapshotError(msg, status.NOT_FOUND);
export const alreadyExists = (msg: string): SnapshotError => new SnapshotError(msg, status.ALREADY_EXISTS);
export const failedPrecondition = (msg: string): SnapshotError => new SnapshotError(msg, status.FAILED_PRECONDITION);
export const invalidArgument = (msg: string): SnapshotError => new SnapshotError(msg, status.INVALID_ARGUMENT);
export const unavailable = (msg: string): SnapshotError => new SnapshotError(msg, status.UNAVAILABLE);

/** The gRPC status code for any error: ours carry one, everything else is UNKNOWN. */
export function grpcCode(err: unknown): status {
  return err instanceof SnapshotError ? err.code : status.UNKNOWN;
}
