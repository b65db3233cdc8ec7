import ArgumentParser

/// `tranche bench`: throughput figures (filled in below).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Measure throughput.")
}
