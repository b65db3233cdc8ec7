import ArgumentParser
import Foundation
import TrancheStore

/// `tranche tenants set|list`: each tenant's weight in the fair share of
/// workers and its quotas, kept in the store (like `tranche keys`).
struct TenantsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenants", abstract: "Set and list tenants' weights and quotas.",
        subcommands: [SetTenant.self, List.self])

    struct SetTenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Set a tenant's weight and quotas; options left out keep their stored value.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "The tenant (an API key's tenant; `local` for the CLI, the library and an open server).")
        var name: String
        @Option(help: "Items running at once (0 to 1000000000000), or `none`.") var maxRunning: Quota?
        @Option(help: "Items queued (accepted, not finished; 0 to 1000000000000), or `none`.") var maxQueued: Quota?
        @Option(help: "Batches not yet ended (0 to 1000000000000), or `none`.") var maxOpenBatches: Quota?
        @Option(help: "Its share of free workers against other tenants' (default 1), 0.001 to 1000000.")
        var weight: Double?

        func run() async throws {
            let figures = try await database.withStore { store in
                let tenants = try tenantStore(store)
                var record = try await tenants.tenant(named: name) ?? TenantRecord(name: name)
                if let weight { record.weight = weight }
                if let maxRunning { record.maxRunning = maxRunning.value }
                if let maxQueued { record.maxQueued = maxQueued.value }
                if let maxOpenBatches { record.maxOpenBatches = maxOpenBatches.value }
                record.updatedAt = Date()
                if let problem = record.problem { throw CLIError(problem) }
                try await tenants.setTenant(record)
                return try await tenants.tenantFigures(of: name)
            }
            print(TenantsCommand.header)
            print(TenantsCommand.row(figures))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List tenants with settings or open batches: weight, quotas and what each holds now.")
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let all = try await database.withStore { store in try await tenantStore(store).tenantFigures() }
            print(TenantsCommand.header)
            for figures in all { print(TenantsCommand.row(figures)) }
        }
    }

    static let header = "TENANT\tWEIGHT\tMAX_RUNNING\tMAX_QUEUED\tMAX_OPEN_BATCHES\tRUNNING\tQUEUED\tOPEN_BATCHES"

    /// One tab-separated line; `-` for no quota.
    static func row(_ figures: TenantFigures) -> String {
        let settings = figures.settings ?? TenantRecord(name: figures.name)
        let quota = { (value: Int64?) in value.map(String.init) ?? "-" }
        return [
            figures.name, numberText(settings.weight), quota(settings.maxRunning), quota(settings.maxQueued),
            quota(settings.maxOpenBatches), String(figures.usage.running), String(figures.usage.queued),
            String(figures.usage.openBatches),
        ].joined(separator: "\t")
    }

    /// A quota on the command line: a whole number, or `none` for no quota.
    struct Quota: ExpressibleByArgument {
        var value: Int64?

        init?(argument: String) {
            if argument == "none" {
                value = nil
            } else if let number = Int64(argument), TenantRecord.Limits.quota.contains(number) {
                value = number
            } else {
                return nil
            }
        }
    }
}

/// The store's tenant settings; every store of this build keeps them.
private func tenantStore(_ store: any ServerStore) throws -> any TenantStore {
    guard let tenants = store as? any TenantStore else { throw CLIError("this store keeps no tenant settings") }
    return tenants
}
