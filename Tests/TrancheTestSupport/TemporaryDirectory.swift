public import Foundation

/// Runs `body` with a new directory under the system's temporary directory
/// (`prefix` followed by a UUID), and removes the directory and everything
/// in it afterwards, also when `body` throws. Tests write only there.
public func withTemporaryDirectory<T>(
    _ prefix: String, isolation: isolated (any Actor)? = #isolation, _ body: (URL) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try await body(directory)
}
