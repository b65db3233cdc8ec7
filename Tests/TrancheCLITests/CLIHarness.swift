import Foundation
import Testing

/// Parses the JSON summary `--json` prints.
func summary(_ stdout: String) throws -> [String: Any] {
    let line = try #require(stdout.split(separator: "\n").last)
    return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
}

func writeItems(_ count: Int, to url: URL, make: (Int) -> String = { #"{"id":\#($0)}"# }) throws {
    var text = ""
    text.reserveCapacity(count * 12)
    for index in 0..<count { text += make(index) + "\n" }
    try text.write(to: url, atomically: true, encoding: .utf8)
}
