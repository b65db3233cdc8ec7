import Foundation
import Testing

@Suite("docs")
struct DocsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test("the library guide shows the example that the build compiles")
    func libraryExample() throws {
        let guide = try String(contentsOf: Self.root.appendingPathComponent("docs/library.md"), encoding: .utf8)
        let source = try String(
            contentsOf: Self.root.appendingPathComponent("Examples/LibraryExample/LibraryExample.swift"),
            encoding: .utf8)
        let begin = try #require(guide.range(of: "<!-- example:begin -->\n```swift\n"))
        let end = try #require(guide.range(of: "```\n<!-- example:end -->"))
        #expect(String(guide[begin.upperBound..<end.lowerBound]) == source)
    }
}
