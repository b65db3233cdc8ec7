import Testing
import TrancheCore

@Suite("Adaptive pace (AIMD)")
struct AdaptivePaceTests {
    func controller(initial: Double = 10, ceiling: Double? = nil) -> AdaptivePace {
        var configuration = AdaptivePace.Configuration()
        configuration.initialRate = initial
        configuration.ceiling = ceiling
        return AdaptivePace(configuration)
    }

    @Test("successes climb one step per interval, never above the ceiling")
    func climbs() {
        var pace = controller(initial: 10, ceiling: 12)
        let changed1 = pace.record(.answered(latency: 0.01), at: 0)
        #expect(changed1)
        #expect(pace.rate == 11)
        #expect(pace.reason == .succeeding)
        // Within the step interval: no second step.
        let changed2 = pace.record(.answered(latency: 0.01), at: 0.1)
        #expect(!changed2)
        #expect(pace.rate == 11)
        let changed3 = pace.record(.answered(latency: 0.01), at: 0.6)
        #expect(changed3)
        #expect(pace.rate == 12)
        let changed4 = pace.record(.answered(latency: 0.01), at: 5)
        #expect(!changed4)
        #expect(pace.rate == 12)
    }

    @Test("a refusal cuts the rate by 0.7 once per interval, counts every refusal, stops at the floor")
    func refusalsCut() {
        var pace = controller(initial: 16)
        let changed5 = pace.record(.refused(retryAfter: nil), at: 0)
        #expect(changed5)
        #expect(pace.rate == 16 * 0.7)
        #expect(pace.reason == .refused)
        // Answers to calls made before the cut: counted, no second cut.
        let changed6 = pace.record(.refused(retryAfter: nil), at: 0.05)
        #expect(!changed6)
        #expect(pace.rate == 16 * 0.7)
        #expect(pace.throttled == 2)
        var time = 1.0
        for _ in 0..<20 {
            _ = pace.record(.refused(retryAfter: nil), at: time)
            time += 1
        }
        #expect(pace.rate == 0.1)
    }

    @Test("Retry-After pauses until then (clamped) and cuts")
    func retryAfter() {
        var pace = controller(initial: 10)
        let changed7 = pace.record(.refused(retryAfter: 3), at: 100)
        #expect(changed7)
        #expect(pace.reason == .retryAfter)
        #expect(pace.rate == 7)
        #expect(pace.pause(at: 101) == 2)
        #expect(pace.pause(at: 104) == 0)
        // A huge or broken Retry-After: at most the longest pause.
        _ = pace.record(.refused(retryAfter: 1e300), at: 200)
        #expect(pace.pause(at: 200) == 60)
        _ = pace.record(.refused(retryAfter: .nan), at: 300)
        #expect(pace.pause(at: 300) == 0)
    }

    @Test("latency well above its baseline cuts gently; a steady latency does not")
    func latency() {
        var pace = controller(initial: 10)
        var time = 0.0
        for _ in 0..<10 {
            _ = pace.record(.answered(latency: 0.1), at: time)
            time += 1
        }
        let before = pace.rate
        let changed8 = pace.record(.answered(latency: 0.5), at: time)
        #expect(changed8)
        #expect(pace.reason == .latency)
        #expect(abs((pace.rate ?? 0) - (before ?? 0) * 0.9) < 1e-9)
        #expect(abs((pace.baseline ?? 0) - 0.104) < 0.001)
    }

    @Test("a ceiling that changes holds the rate under it; hostile numbers do not escape the bounds")
    func bounds() {
        var pace = controller(initial: 50)
        pace = pace.withCeiling(20)
        #expect(pace.rate == 20)
        pace.resume(from: .infinity)
        #expect(pace.rate == 20)
        pace.resume(from: 3)
        #expect(pace.rate == 3)
        let changed9 = pace.record(.answered(latency: .nan), at: 0)
        #expect(!changed9)
        let changed10 = pace.record(.answered(latency: -1), at: 0)
        #expect(!changed10)
        var broken = AdaptivePace.Configuration()
        broken.initialRate = .nan
        broken.floor = -1
        broken.ceiling = .nan
        #expect(AdaptivePace(broken).rate == 0.1)
    }

    @Test("without a rate given: none until the first refusal, then the answered rate of the last second, cut")
    func startsUnlimited() {
        var pace = AdaptivePace()
        #expect(pace.rate == nil)
        for index in 0..<30 {
            _ = pace.record(.answered(latency: 0.001), at: 10 + Double(index) * 0.05)
        }
        #expect(pace.rate == nil)
        // About 20 answers in the last second (one every 50 ms).
        let answered = pace.answeredRate(at: 11.5)
        #expect((19...21).contains(answered))
        let changed = pace.record(.refused(retryAfter: nil), at: 11.5)
        #expect(changed)
        #expect(pace.rate == answered * 0.7)
    }
}
