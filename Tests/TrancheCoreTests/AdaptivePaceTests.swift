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

    @Test("a refusal cuts the rate by 0.7 once a second at most, counts every refusal, stops at the floor")
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

    /// Answers every `1 / rate` seconds from `start` for `seconds`, at `latency`.
    func answer(_ pace: inout AdaptivePace, rate: Double, from start: Double, for seconds: Double, latency: Double)
        -> Double
    {
        var time = start
        while time < start + seconds {
            _ = pace.record(.answered(latency: latency), at: time)
            time += 1 / rate
        }
        return time
    }

    @Test("latency above its baseline cuts gently only when answers also slow down, and not again for 2 s")
    func latency() {
        var pace = controller(initial: 50)
        var time = answer(&pace, rate: 40, from: 0, for: 3, latency: 0.1)
        // Slow answers coming as fast as before (a client queueing its own
        // calls, load building up): no cut.
        time = answer(&pace, rate: 40, from: time, for: 2, latency: 0.5)
        #expect(pace.reason != .latency)
        // Slow answers, and fewer of them: a cut of a tenth.
        time = answer(&pace, rate: 40, from: time, for: 1, latency: 0.1)
        let before = pace.rate ?? 0
        var cutAt: Double?
        var probe = time
        while probe < time + 2 {
            _ = pace.record(.answered(latency: 0.6), at: probe)
            if pace.reason == .latency, cutAt == nil { cutAt = probe }
            probe += 1 / 20.0
        }
        #expect(cutAt != nil)
        #expect(pace.rate.map { $0 <= before } ?? false)
        #expect(pace.throttled == 0)
        // The cut did not bring latency down: it is the new baseline, no second cut, growth again.
        let cutRate = pace.rate ?? 0
        var later = probe
        while later < probe + 3 {
            _ = pace.record(.answered(latency: 0.6), at: later)
            later += 1 / (later < probe + 1.5 ? 15.0 : 10.0)
        }
        #expect(pace.reason != .latency, "\(String(describing: pace.rate))")
        #expect(pace.rate.map { $0 > cutRate } ?? false)
        #expect(pace.baseline.map { $0 > 0.4 } ?? false)
    }

    @Test("a refusal of a call made before the last cut does not cut again, even after the cut interval")
    func refusalBeforeCut() {
        var pace = controller(initial: 20)
        _ = pace.record(.refused(retryAfter: nil, latency: 0.01), at: 10)
        #expect(pace.rate == 14)
        // Answered 2 s later for a call made 2.5 s ago, before the cut.
        let changed = pace.record(.refused(retryAfter: nil, latency: 2.5), at: 12)
        #expect(!changed)
        #expect(pace.rate == 14)
        #expect(pace.throttled == 2)
    }

    @Test("the cluster's pace is adopted: its rate, its last cut (older answers do not cut again), its pause")
    func adopts() {
        var pace = AdaptivePace()
        #expect(pace.slowStart)
        pace.adopt(rate: 12, reason: .refused, cutAgo: 0.2, pause: 3, at: 100)
        #expect(pace.rate == 12)
        #expect(!pace.slowStart)
        #expect(pace.pause(at: 101) == 2)
        // A call made 0.5 s ago, before another node's cut: no second cut.
        let changed = pace.record(.refused(retryAfter: nil, latency: 0.5), at: 100.1)
        #expect(!changed)
        #expect(pace.rate == 12)
        // A call made after it, past the cut interval: cut.
        _ = pace.record(.refused(retryAfter: nil, latency: 0.01), at: 101)
        #expect(pace.rate == 12 * 0.7)
        if case .cut(let factor, let from, let measured) = pace.lastStep {
            #expect(factor == 0.7 && from == 12 && !measured)
        } else {
            Issue.record("no cut step: \(String(describing: pace.lastStep))")
        }
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

    @Test("without a rate given: a slow start doubling every 0.1 s, then the answered rate of the last second, cut")
    func slowStart() {
        var pace = AdaptivePace()
        #expect(pace.rate == 10)
        #expect(pace.slowStart)
        for index in 0..<30 {
            _ = pace.record(.answered(latency: 0.001), at: 10 + Double(index) * 0.05)
        }
        // 1.45 s of answers: doubled 14 times (every other answer), held at a million.
        #expect(pace.rate.map { $0 > 1_000 } ?? false)
        #expect(pace.reason == .starting)
        // About 20 answers in the last second (one every 50 ms).
        let answered = pace.answeredRate(at: 11.5)
        // (counted by tenths of a second: one tenth may fall outside)
        #expect((17...21).contains(answered))
        let changed = pace.record(.refused(retryAfter: nil), at: 11.5)
        #expect(changed)
        #expect(pace.rate == answered * 0.7)
        #expect(!pace.slowStart)
        #expect(pace.lastStep == .cut(factor: 0.7, from: answered, measured: true))
    }
}
