import Foundation
import Testing
import TrancheStore

/// What admin keys and stream tokens need of every store: the admin flag kept
/// with a key, and one server secret that every node reads alike.
@Suite("Admin keys and server secrets", .testResources)
struct AdminKeyStoreTests {
    @Test("an API key's admin flag is stored and read back", arguments: StoreFactory.all)
    func adminFlag(factory: StoreFactory) async throws {
        let store = try #require(try await factory.make() as? any ServerStore)
        let now = Date(milliseconds: Date().milliseconds)
        let admin = APIKeyRecord(id: "a1", tenant: "ops", hash: "h1", createdAt: now, revokedAt: nil, admin: true)
        let tenant = APIKeyRecord(
            id: "t1", tenant: "acme", hash: "h2", createdAt: now.addingTimeInterval(1), revokedAt: nil)
        try await store.createAPIKey(admin)
        try await store.createAPIKey(tenant)
        #expect(try await store.apiKey(id: "a1")?.admin == true)
        #expect(try await store.apiKey(id: "t1")?.admin == false)
        #expect(try await store.apiKeys() == [admin, tenant])
    }

    @Test(
        "a server secret is stored once: concurrent and later callers all get the first one",
        arguments: StoreFactory.all)
    func serverSecret(factory: StoreFactory) async throws {
        let store = try #require(try await factory.make() as? any ServerStore)
        let answers = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<8 {
                group.addTask { try await store.serverSecret(named: "s", candidate: "candidate-\(index)") }
            }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        let stored = try #require(answers.first)
        #expect(Set(answers) == [stored])
        #expect(stored.hasPrefix("candidate-"))
        #expect(try await store.serverSecret(named: "s", candidate: "late") == stored)
        #expect(try await store.serverSecret(named: "other", candidate: "x") == "x")
    }
}
