import Foundation
import Testing
import TrancheStore

/// Tenants on every store: settings kept and checked, claims shared fairly
/// between tenants (priority orders batches only within one), `max_running`
/// held at claim, and the figures quotas are checked against.
@Suite("Tenants: fair share and quotas", .testResources)
struct TenantStoreTests {
    let start = Date(milliseconds: Date().milliseconds)

    func tenantStore(_ factory: StoreFactory) async throws -> any TenantStore {
        try #require(try await factory.make() as? any TenantStore)
    }

    /// A batch of `items` one-item chunks that may hold them all in flight at once.
    func batch(
        _ store: some BatchStore, owner: String, items: Int, priority: Int = 0, chunkSize: Int = 1
    ) async throws -> BatchRecord {
        try await store.createBatch(
            NewBatch(
                type: "t", owner: owner, options: options(chunkSize: chunkSize, concurrency: 1_000),
                priority: priority, createdAt: start),
            items: payloads(items))
    }

    /// The batches of `count` claims, one millisecond apart from `offset` on.
    func claims(_ store: some BatchStore, _ count: Int, offset: Int = 0) async throws -> [ChunkLease] {
        var leases: [ChunkLease] = []
        for index in 0..<count {
            let now = start.addingTimeInterval(Double(offset + index) / 1_000)
            guard let lease = try await store.claimChunk(owner: "w", leaseDuration: 60, now: now) else { break }
            leases.append(lease)
        }
        return leases
    }

    @Test("settings are stored, replaced and refused out of range", arguments: StoreFactory.all)
    func settings(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        #expect(try await store.tenant(named: "acme") == nil)
        let acme = TenantRecord(
            name: "acme", weight: 2.5, maxRunning: 10, maxQueued: 1_000, maxOpenBatches: 3, updatedAt: start)
        try await store.setTenant(acme)
        #expect(try await store.tenant(named: "acme") == acme)
        let replaced = TenantRecord(name: "acme", weight: 1, maxRunning: nil, updatedAt: start.addingTimeInterval(1))
        try await store.setTenant(replaced)
        try await store.setTenant(TenantRecord(name: "beta", updatedAt: start))
        #expect(try await store.tenants() == [replaced, TenantRecord(name: "beta", updatedAt: start)])
        for bad in [
            TenantRecord(name: "", updatedAt: start), TenantRecord(name: "x", weight: 0, updatedAt: start),
            TenantRecord(name: "x", weight: .nan, updatedAt: start),
            TenantRecord(name: "x", weight: 1e300, updatedAt: start),
            TenantRecord(name: "x", maxRunning: -1, updatedAt: start),
            TenantRecord(name: "x", maxQueued: Int64.max, updatedAt: start),
        ] {
            await #expect(throws: StoreError(.invalidTenant, bad.problem ?? "")) { try await store.setTenant(bad) }
        }
        #expect(try await store.tenant(named: "x") == nil)
    }

    @Test(
        "a tenant's small batch gets the next claim whatever priority another tenant's batches have",
        arguments: StoreFactory.all)
    func smallBatchIsNotStarved(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        let huge = try await batch(store, owner: "a", items: 50, priority: 1_000_000)
        // Tenant a holds three chunks before b submits anything.
        #expect(try await claims(store, 3).map(\.batchID) == [huge.id, huge.id, huge.id])
        let small = try await batch(store, owner: "b", items: 2)
        let next = try await claims(store, 3, offset: 3)
        // b has none in flight, a has three: b first, and b again while it
        // holds fewer than a; then a.
        #expect(next.map(\.batchID) == [small.id, small.id, huge.id])
    }

    @Test("priority orders batches within a tenant", arguments: StoreFactory.all)
    func priorityWithinTenant(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        let low = try await batch(store, owner: "a", items: 5)
        let high = try await batch(store, owner: "a", items: 5, priority: 7)
        #expect(try await claims(store, 2).map(\.batchID) == [high.id, high.id])
        _ = low
    }

    @Test("weights 3:1 share claims 3:1", arguments: StoreFactory.all)
    func weights(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        try await store.setTenant(TenantRecord(name: "a", weight: 3, updatedAt: start))
        let a = try await batch(store, owner: "a", items: 40)
        let b = try await batch(store, owner: "b", items: 40)
        let leases = try await claims(store, 12)
        #expect(leases.filter { $0.batchID == a.id }.count == 9)
        #expect(leases.filter { $0.batchID == b.id }.count == 3)
        // And at every point, neither is ahead of its share by more than one chunk.
        var held = (a: 0.0, b: 0.0)
        for lease in leases {
            if lease.batchID == a.id { held.a += 1 } else { held.b += 1 }
            #expect(abs(held.a / 3 - held.b) <= 1)
        }
    }

    @Test("a tenant at max_running gets no new chunk; others still do", arguments: StoreFactory.all)
    func maxRunning(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        try await store.setTenant(TenantRecord(name: "a", maxRunning: 4, updatedAt: start))
        try await store.setTenant(TenantRecord(name: "c", maxRunning: 0, updatedAt: start))
        let a = try await batch(store, owner: "a", items: 20, chunkSize: 2)
        _ = try await batch(store, owner: "c", items: 5)
        let held = try await claims(store, 5)
        // Two chunks of two items: four running, the cap; c may run nothing.
        #expect(held.map(\.batchID) == [a.id, a.id])
        #expect(
            try await store.tenantUsage("a") == [
                TenantUsage(name: "a", running: 4, chunksInFlight: 2, queued: 20, openBatches: 1)
            ])
        let first = try #require(held.first)
        _ = try await store.checkpoint(
            first, outcomes: succeeded(first), finish: true, failBatch: nil, leaseDuration: 60,
            now: start.addingTimeInterval(1))
        // Two running again: one more chunk, then the cap again.
        let more = try await claims(store, 2, offset: 2_000)
        #expect(more.map(\.batchID) == [a.id])
        let b = try await batch(store, owner: "b", items: 1)
        #expect(try await claims(store, 1, offset: 3_000).map(\.batchID) == [b.id])
    }

    @Test("max_running holds when claims race (several nodes at once)", arguments: StoreFactory.all)
    func maxRunningUnderRace(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        try await store.setTenant(TenantRecord(name: "a", maxRunning: 4, updatedAt: start))
        for _ in 0..<4 { _ = try await batch(store, owner: "a", items: 20, chunkSize: 2) }
        let leases = try await withThrowingTaskGroup(of: ChunkLease?.self) { group in
            for index in 0..<12 {
                group.addTask {
                    try await store.claimChunk(owner: "node\(index)", leaseDuration: 60, now: start)
                }
            }
            return try await group.reduce(into: [ChunkLease]()) { if let lease = $1 { $0.append(lease) } }
        }
        #expect(leases.map(\.items.count).reduce(0, +) == 4)
        #expect(try await store.tenantUsage("a").first?.running == 4)
    }

    @Test("usage counts each tenant's open batches, queued and running items", arguments: StoreFactory.all)
    func usage(factory: StoreFactory) async throws {
        let store = try await tenantStore(factory)
        #expect(try await store.tenantUsage(nil) == [])
        #expect(try await store.tenantUsage("nobody") == [TenantUsage(name: "nobody")])
        _ = try await batch(store, owner: "a", items: 10, chunkSize: 5)
        let done = try await batch(store, owner: "a", items: 3, chunkSize: 3)
        _ = try await batch(store, owner: "b", items: 2)
        _ = try await store.transition(done.id, .cancel, reason: nil, at: start)
        let lease = try #require(try await claims(store, 1).first)
        #expect(lease.items.count == 5)
        #expect(
            try await store.tenantUsage(nil) == [
                TenantUsage(name: "a", running: 5, chunksInFlight: 1, queued: 10, openBatches: 1),
                TenantUsage(name: "b", running: 0, chunksInFlight: 0, queued: 2, openBatches: 1),
            ])
    }
}
