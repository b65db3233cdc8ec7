public import Foundation
import Synchronization
public import Testing
public import TranchePostgres

/// What a test opens through a factory that cannot scope it itself (the
/// store conformance suite's `factory.make()`): PostgreSQL stores that run
/// for the length of the test, and directories removed after it. Add the
/// ``Trait/testResources`` trait to the suite or test; inside it,
/// ``current`` is set.
public final class TestResources: Sendable {
    /// The resources of the running test, inside a `.testResources` scope.
    @TaskLocal public static var current: TestResources?

    private let stores: AsyncStream<PostgresBatchStore>.Continuation
    private let opened = Mutex<(stores: [PostgresBatchStore], directories: [URL])>(([], []))

    fileprivate init(_ stores: AsyncStream<PostgresBatchStore>.Continuation) {
        self.stores = stores
    }

    /// The resources of the running test; throws when the test lacks the trait.
    public static func required() throws -> TestResources {
        guard let current else { throw MissingTrait() }
        return current
    }

    /// Runs `store` until the test ends, then closes it.
    public func run(_ store: PostgresBatchStore) {
        opened.withLock { $0.stores.append(store) }
        stores.yield(store)
    }

    /// Removes `directory` and what it holds when the test ends.
    public func removeAfterwards(_ directory: URL) {
        opened.withLock { $0.directories.append(directory) }
    }

    /// Closes the stores (their `run()` then ends) and removes the directories.
    fileprivate func end() {
        stores.finish()
        let (stores, directories) = opened.withLock { $0 }
        for store in stores { store.close() }
        for directory in directories { try? FileManager.default.removeItem(at: directory) }
    }

    /// A test used ``TestResources`` without the trait.
    public struct MissingTrait: Error, CustomStringConvertible {
        public var description: String { "add the .testResources trait to this test or its suite" }
    }
}

/// Provides ``TestResources`` to each test case it applies to.
public struct TestResourcesTrait: TestTrait, SuiteTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let (stores, sink) = AsyncStream.makeStream(of: PostgresBatchStore.self)
        let resources = TestResources(sink)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await withThrowingDiscardingTaskGroup { running in
                    for await store in stores { running.addTask { try await store.run() } }
                }
            }
            let result: Result<Void, any Error>
            do {
                try await TestResources.$current.withValue(resources) { try await function() }
                result = .success(())
            } catch {
                result = .failure(error)
            }
            resources.end()
            try await group.waitForAll()
            try result.get()
        }
    }
}

extension Trait where Self == TestResourcesTrait {
    /// Gives each test case ``TestResources``: stores that run while it runs,
    /// directories removed after it.
    public static var testResources: Self { Self() }
}

extension TestPostgres {
    /// Opens a store on a fresh database that runs until the test ends (the
    /// test needs the `.testResources` trait).
    public static func runningStore() async throws -> PostgresBatchStore {
        let resources = try TestResources.required()
        let store = try await PostgresBatchStore(url: try await freshDatabaseURL())
        resources.run(store)
        return store
    }
}
