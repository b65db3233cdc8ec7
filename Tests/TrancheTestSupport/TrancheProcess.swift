public import Foundation
import Testing

/// The `tranche` binary built beside the tests.
public let trancheBinary: String = {
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let beside = runner.appendingPathComponent("tranche").path
    if FileManager.default.isExecutableFile(atPath: beside) { return beside }
    // The package's default build folder, from this file's location.
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/tranche").path
}()

/// A running `tranche` process.
public final class TrancheProcess: @unchecked Sendable {
    public let process = Process()
    public let stdoutURL: URL
    public let stderrURL: URL
    public let stdin = Pipe()

    public init(_ arguments: [String], in directory: URL, stdinFromPipe: Bool = false) throws {
        stdoutURL = directory.appendingPathComponent("stdout-\(UUID())")
        stderrURL = directory.appendingPathComponent("stderr-\(UUID())")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: trancheBinary)
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        process.standardInput = stdinFromPipe ? stdin : FileHandle.nullDevice
        try process.run()
    }

    /// Waits for the exit, at most `seconds`.
    public func wait(seconds: Double = 120) async throws -> Int32 {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while process.isRunning {
            if ContinuousClock.now > deadline {
                process.terminate()
                Issue.record("tranche did not exit within \(seconds) s; stderr: \(stderr)")
                return -1
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return process.terminationStatus
    }

    /// Writes `data` to the process's stdin from a background thread, then
    /// closes it when `close` is set; a process that exits early is not an error here.
    public func feed(_ data: Data, close: Bool) {
        let handle = stdin.fileHandleForWriting
        DispatchQueue.global().async {
            try? handle.write(contentsOf: data)
            if close { try? handle.close() }
        }
    }

    public func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }
}

/// Runs `tranche` to its end and returns its exit status and outputs.
public func tranche(_ arguments: [String], in directory: URL) async throws -> (
    status: Int32, stdout: String, stderr: String
) {
    let process = try TrancheProcess(arguments, in: directory)
    let status = try await process.wait()
    return (status, process.stdout, process.stderr)
}

/// Starts `tranche serve` on a free port; returns it and its base URL once
/// it listens (at most 60 s).
public func startServer(_ arguments: [String], in directory: URL) async throws -> (TrancheProcess, String) {
    let process = try TrancheProcess(["serve", "--port", "0"] + arguments, in: directory)
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
        if let range = process.stdout.range(of: "listening on ") {
            let rest = process.stdout[range.upperBound...]
            let url = String(rest.prefix { !$0.isWhitespace })
            return (process, url)
        }
        guard process.process.isRunning else { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("the server did not start: \(process.stderr)")
    throw CLIFailure()
}

/// A `tranche` process that did not do what a test needed (the issue is recorded).
public struct CLIFailure: Error {}
