/// The states of a `deliveries` row (``DeliveryRecord/status``), so that
/// no statement spells one by hand.
package enum DeliveryState: String, Sendable, CaseIterable {
    /// Owed: due at `next_attempt_at` (leased while a node POSTs it).
    case pending
    /// The webhook answered 2xx.
    case delivered
    /// Out of attempts.
    case failed

    /// The state as an SQL literal: `'pending'` (a literal, not a bound
    /// value, so that PostgreSQL's partial index on `status <> 'pending'`
    /// serves the statement).
    package var sql: String { "'\(rawValue)'" }

    /// The state an attempt leaves: delivered, pending while a next attempt
    /// is due, failed when none is.
    package static func after(delivered: Bool, retrying: Bool) -> DeliveryState {
        delivered ? .delivered : (retrying ? .pending : .failed)
    }
}
