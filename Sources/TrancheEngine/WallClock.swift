public import Foundation

/// Where the engine reads the time it stores and hands to the store: due
/// times, leases, deadlines, checkpoints, events and timestamps.
///
/// The default is the system's wall clock. Tests set one they control.
/// Local timeouts and sleeps (item timeouts, intervals between sweeps) do
/// not read it: they use `ContinuousClock`, which no wall-clock change moves.
public struct WallClock: Sendable {
    /// The current time.
    public var now: @Sendable () -> Date

    /// A clock that answers `now()`.
    public init(now: @escaping @Sendable () -> Date) {
        self.now = now
    }

    /// The system's wall clock (`Date()`).
    public static let system = WallClock { Date() }
}
