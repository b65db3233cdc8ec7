public import Foundation

/// A running Tranche process as it reports itself, for `GET /v1/nodes`.
public struct NodeRecord: Sendable, Hashable {
    /// The node's id, the owner name in its leases.
    public var id: String
    /// `serve`, `worker` or `run`.
    public var role: String
    public var host: String
    public var pid: Int
    /// Items this node may run at once.
    public var workers: Int
    public var startedAt: Date
    /// The last heartbeat; a node silent for longer than its lease is gone.
    public var heartbeatAt: Date
    /// Chunks whose lease this node holds now (filled in by the store).
    public var chunks: Int64
    /// Items in those chunks that have not finished yet (filled in by the store).
    public var runningItems: Int64
    /// Whether this node runs the maintenance (filled in by the store).
    public var isLeader: Bool

    public init(
        id: String, role: String, host: String, pid: Int, workers: Int, startedAt: Date, heartbeatAt: Date,
        chunks: Int64 = 0, runningItems: Int64 = 0, isLeader: Bool = false
    ) {
        self.id = id
        self.role = role
        self.host = host
        self.pid = pid
        self.workers = workers
        self.startedAt = startedAt
        self.heartbeatAt = heartbeatAt
        self.chunks = chunks
        self.runningItems = runningItems
        self.isLeader = isLeader
    }
}

/// A store shared by several processes tells them when there is new work,
/// so idle nodes sleep instead of polling.
public protocol WorkNotifying: Sendable {
    /// Yields when another process made work claimable or recorded events.
    /// Never ends while the store is open; reconnects on its own.
    func workNotifications() -> AsyncStream<Void>
}
