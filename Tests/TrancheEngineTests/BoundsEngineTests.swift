import Foundation
import Testing
import TrancheEngine
import TrancheStrategies
import TrancheTestSupport

/// Whatever a flag or a library caller sets, the engine starts, runs and stops.
@Suite("Engine configuration bounds")
struct BoundsEngineTests {
    static let absurd: [Double] = [1e300, -1, .infinity, .nan]

    @Test(
        "an engine whose every duration and count is absurd starts, runs a small batch and stops",
        arguments: EngineStore.all, absurd)
    func absurdConfiguration(_ store: EngineStore, _ value: Double) async throws {
        let configure: (inout TrancheEngine.Configuration) -> Void = { configuration in
            configuration.leaseDuration = value
            configuration.checkpointInterval = value
            configuration.sweepInterval = value
            configuration.drainGracePeriod = value
            configuration.retention = value
            configuration.progressInterval = value
            configuration.leaderTerm = value
            configuration.notifiedIdlePoll = value
            configuration.splitAfterRescues = value < 0 ? Int.min : Int.max
            configuration.typeLimits = ["noop": RateLimit(rate: value, maxConcurrent: value < 0 ? -1 : Int.max)]
        }
        let report = try await store.withEngine(
            [BuiltinStrategies.noop], workers: value < 0 ? Int.min : Int.max, configure: configure
        ) { engine in
            let valid = engine.configuration
            for setting in [
                valid.leaseDuration, valid.checkpointInterval, valid.sweepInterval, valid.drainGracePeriod,
                valid.retention, valid.progressInterval, valid.leaderTerm, valid.notifiedIdlePoll,
            ] {
                #expect(setting.isFinite && setting >= 0, "\(setting)")
            }
            #expect(valid.checkpointInterval <= valid.leaseDuration / 2)
            #expect(valid.workers >= 1)
            return try await engine.execute(
                Submission(type: "noop", options: options(chunkSize: 2)), items: try items(5))
        }
        #expect(report.batch.status == .completed)
        #expect(report.batch.counts.succeeded == 5)
    }

    @Test("validated() keeps sane settings as they are")
    func saneSettingsUnchanged() {
        var configuration = TrancheEngine.Configuration()
        configuration.leaseDuration = 60
        configuration.checkpointInterval = 0.1
        configuration.sweepInterval = 0.05
        configuration.progressInterval = 0
        let valid = configuration.validated()
        #expect(valid.leaseDuration == 60)
        #expect(valid.checkpointInterval == 0.1)
        #expect(valid.sweepInterval == 0.05)
        #expect(valid.progressInterval == 0)
        #expect(valid.workers == configuration.workers)
        #expect(valid.retention == configuration.retention)
    }
}
