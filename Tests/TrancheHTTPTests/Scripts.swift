import Foundation

/// The repository's root, for its scripts and docs.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Runs one of `scripts/` with python3; returns its exit status and everything it printed.
/// With `temporaryDirectory`, the script (and what it starts) has it as its
/// `TMPDIR`: the test's own directory, removed with it. The wait happens on a
/// thread of its own: on a 2-core machine two waits blocking the cooperative
/// pool (two dashboard checks at once) stall every live server of the run.
func runScript(
    _ name: String, _ arguments: [String], temporaryDirectory: URL? = nil
) async throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", repositoryRoot.appendingPathComponent("scripts/\(name)").path] + arguments
    if let temporaryDirectory {
        var environment = ProcessInfo.processInfo.environment
        environment["TMPDIR"] = temporaryDirectory.path
        process.environment = environment
    }
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let reader = output.fileHandleForReading
    let text = await withCheckedContinuation { continuation in
        Thread {
            let text = String(decoding: reader.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            continuation.resume(returning: text)
        }.start()
    }
    return (process.terminationStatus, text)
}
