import Synchronization

/// A transaction's wish to wake other nodes (`NOTIFY`) once it commits.
///
/// PostgreSQL makes a transaction that notifies hold a cluster-wide lock
/// from just before its commit to the end of it, the WAL flush included
/// (`PreCommit_Notify`), so transactions that notified committed one at a
/// time, whatever batch or table they wrote. Now a transaction only marks
/// that it wants a wake-up (``PostgresConnection/notifyWork()`` finds the
/// mark through ``current``), and after its commit the store's sender
/// notifies in a short transaction of its own that does not wait for the
/// disk (``PostgresBatchStore/sendWakes()``): a wake-up is a hint, since
/// nodes also look for work on their own. Requests made while one is being
/// sent go out together as the next.
final class PendingWake: Sendable {
    private let requested = Mutex(false)

    /// The mark of the transaction running in this task, if any.
    @TaskLocal static var current: PendingWake?

    func request() {
        requested.withLock { $0 = true }
    }

    var isRequested: Bool {
        requested.withLock { $0 }
    }
}
