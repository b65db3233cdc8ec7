public import TrancheEngine

/// Runs `body` while `engine` runs, then drains the engine and waits for it.
public func withRunning<T: Sendable>(
    _ engine: TrancheEngine, _ body: @Sendable (TrancheEngine) async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask {
            try await engine.run()
            return nil
        }
        defer { engine.drain() }
        let result = try await body(engine)
        engine.drain()
        while let next = try await group.next() { _ = next }
        return result
    }
}
