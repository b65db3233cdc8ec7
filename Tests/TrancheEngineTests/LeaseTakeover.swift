import TrancheEngine

/// A node of the lease-takeover tests (`PrepareTests`, `FinalizeTests`):
/// its id, the clock the nodes share, and leases of an hour, renewed every
/// 1,200 s of real time, so never during a test: a node stalled in its
/// hook holds the lease until the test clock passes it, as a killed node would.
func takeoverNode(_ node: String, clock: TestClock) -> (inout TrancheEngine.Configuration) -> Void {
    { configuration in
        configuration.nodeID = node
        configuration.clock = clock.wallClock
        configuration.leaseDuration = 3_600
    }
}
