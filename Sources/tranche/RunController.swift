import Foundation
import ServiceLifecycle
import Synchronization
import TrancheCore
import TrancheEngine

/// Streams the input into the batch, shows progress and waits for the end;
/// on a signal it stops reading and lets the engine drain.
final class RunController: Service, Sendable {
    let engine: TrancheEngine
    let batchID: BatchID
    let input: String
    let lines: Bool
    let resumeFrom: BatchRecord
    let display: ProgressDisplay
    private let state = Mutex<(interrupted: Bool, failure: CLIError?)>((false, nil))
    private let interruption = OneShotEvent()

    init(
        engine: TrancheEngine, batchID: BatchID, input: String, lines: Bool, resumeFrom: BatchRecord,
        display: ProgressDisplay
    ) {
        self.engine = engine
        self.batchID = batchID
        self.input = input
        self.lines = lines
        self.resumeFrom = resumeFrom
        self.display = display
    }

    var wasInterrupted: Bool { state.withLock { $0.interrupted } }
    var failure: CLIError? { state.withLock { $0.failure } }

    func run() async throws {
        await withGracefulShutdownHandler {
            enum Finished { case work, interruption, display }
            await withTaskGroup(of: Finished.self) { group in
                group.addTask {
                    do {
                        if !self.resumeFrom.sealed { try await self.ingest() }
                        _ = try await self.engine.waitForEnd(self.batchID)
                    } catch let error as CLIError {
                        self.state.withLock { $0.failure = error }
                    } catch is CancellationError {
                    } catch {
                        self.state.withLock { $0.failure = CLIError("\(error)") }
                    }
                    return .work
                }
                group.addTask {
                    await self.interruption.wait()
                    return .interruption
                }
                group.addTask {
                    await self.display.run(engine: self.engine, batchID: self.batchID)
                    return .display
                }
                while let finished = await group.next(), finished == .display {}
                group.cancelAll()
            }
            self.display.finish()
        } onGracefulShutdown: {
            self.state.withLock { $0.interrupted = true }
            self.interruption.fire()
        }
    }

    /// Reads the input from the saved cursor and appends it in blocks, each
    /// with the cursor, so a restart neither re-reads nor skips a line.
    func ingest() async throws {
        let cursor = resumeFrom.cursor.flatMap { try? $0.decode(RunCursor.self) }
        let reader = try InputReader(path: input, offset: cursor?.offset ?? 0, lineNumber: cursor?.line ?? 0)
        var seq = resumeFrom.counts.total
        // Whole chunks per append; an automatic batch's segment is claimed a part at a time.
        let chunk = max(resumeFrom.options.chunkSize ?? ChunkSizeRules.maximumSegment, 1)
        let blockSize = chunk * max(1, 5_000 / chunk)
        var pending: [NewItem] = []
        pending.reserveCapacity(blockSize)
        var lastFlush = ContinuousClock.now
        let lines = self.lines
        func flush(done: Bool) async throws {
            let fingerprint = InputFingerprint.of(path: input, upTo: reader.offset)
            let cursor = RunCursor(offset: reader.offset, line: reader.lineNumber, done: done, fingerprint: fingerprint)
            _ = try await engine.append(
                to: batchID, startSeq: seq, items: pending, cursor: try JSONText(encoding: cursor))
            seq += Int64(pending.count)
            pending.removeAll(keepingCapacity: true)
            lastFlush = .now
        }
        var more = true
        while more {
            if interruption.hasFired { return }
            var block: [NewItem] = []
            more = try await reader.nextLines { line, number in
                if lines {
                    block.append(NewItem(payload: JSONText(unchecked: jsonQuoted(line))))
                    return
                }
                if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
                do throws(JSONSyntaxError) {
                    try JSONSyntax.validate(line)
                    block.append(NewItem(payload: JSONText(unchecked: String(decoding: line, as: UTF8.self))))
                } catch {
                    block.append(
                        NewItem(
                            payload: JSONText(unchecked: jsonQuoted(line)),
                            rejection: .permanent("invalid_json", "line \(number): \(error.description)")))
                }
            }
            // Items are appended whole blocks at a time; a line never splits
            // across a checkpoint because the cursor is taken after full lines.
            pending += block
            if pending.count >= blockSize || (!pending.isEmpty && lastFlush.duration(to: .now) > .milliseconds(500)) {
                try await flush(done: false)
            }
        }
        try await flush(done: true)
        _ = try await engine.seal(batchID)
    }
}
