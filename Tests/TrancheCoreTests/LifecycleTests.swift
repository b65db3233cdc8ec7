import Testing
import TrancheCore

@Suite("Lifecycle")
struct LifecycleTests {
    /// The machine of DESIGN.md written out independently of the table under test.
    static let expected: [BatchStatus: [LifecycleAction: BatchStatus]] = [
        .created: [.preProcess: .preProcessed, .pause: .paused, .fail: .failed, .cancel: .canceled],
        .preProcessed: [.confirm: .confirmed, .pause: .paused, .fail: .failed, .cancel: .canceled],
        .confirmed: [
            .start: .processing, .pause: .paused, .complete: .completed, .fail: .failed, .cancel: .canceled,
            .prepare: .preparing,
        ],
        // A strategy's prepare hook runs: it may fail or be canceled, not paused.
        .preparing: [.prepared: .confirmed, .fail: .failed, .cancel: .canceled],
        .processing: [.pause: .paused, .complete: .completed, .fail: .failed, .cancel: .canceled, .retry: .processing],
        .paused: [.resume: .processing, .fail: .failed, .cancel: .canceled, .retry: .paused],
        .completed: [.retry: .confirmed],
        .failed: [.retry: .confirmed],
        .canceled: [.retry: .confirmed],
    ]

    @Test("every status × action is legal exactly where the design says", arguments: BatchStatus.allCases)
    func everyTransition(from status: BatchStatus) throws {
        for action in LifecycleAction.allCases {
            let want = Self.expected[status]?[action]
            do {
                let got = try BatchLifecycle.next(from: status, action, pausedFrom: .processing)
                #expect(got == want, "\(status) --\(action)-->")
            } catch {
                #expect(want == nil, "\(status) --\(action)--> should be legal")
                #expect(error == IllegalTransition(from: status, action: action))
            }
        }
    }

    @Test("each legal transition is listed once")
    func listedOnce() {
        let keys = BatchLifecycle.transitions.map { "\($0.from)/\($0.action)" }
        #expect(Set(keys).count == keys.count)
        #expect(keys.count == Self.expected.values.map(\.count).reduce(0, +))
    }

    @Test("resume goes back to where the batch was paused")
    func resumeTarget() throws {
        #expect(try BatchLifecycle.next(from: .paused, .resume, pausedFrom: .preProcessed) == .preProcessed)
        #expect(try BatchLifecycle.next(from: .paused, .resume, pausedFrom: .confirmed) == .confirmed)
        #expect(try BatchLifecycle.next(from: .paused, .resume, pausedFrom: .processing) == .processing)
        #expect(try BatchLifecycle.next(from: .paused, .resume, pausedFrom: nil) == .processing)
    }

    @Test("illegal transitions are typed errors with a clear message")
    func illegal() {
        #expect(throws: IllegalTransition(from: .completed, action: .resume)) {
            try BatchLifecycle.next(from: .completed, .resume)
        }
        #expect(throws: IllegalTransition(from: .canceled, action: .confirm)) {
            try BatchLifecycle.next(from: .canceled, .confirm)
        }
        #expect(
            IllegalTransition(from: .completed, action: .resume).description
                == "cannot resume a batch that is completed")
    }

    @Test("every action records its event type")
    func eventTypes() {
        #expect(LifecycleAction.complete.eventType == .completed)
        #expect(LifecycleAction.start.eventType == .processing)
        #expect(Set(LifecycleAction.allCases.map(\.eventType)).count == LifecycleAction.allCases.count)
    }
}
