import Foundation
import NIOCore
import TrancheEngine

/// The formats of `GET /v1/batches/{id}/export`.
enum ExportFormat: String {
    case ndjson, csv, json

    var contentType: String {
        switch self {
        case .ndjson: return "application/x-ndjson"
        case .csv: return "text/csv; charset=utf-8"
        case .json: return "application/json"
        }
    }

    var header: String {
        switch self {
        case .ndjson: return ""
        case .csv: return "seq,status,attempts,error_code,error_message,output,item\n"
        case .json: return "["
        }
    }

    var footer: String { self == .json ? "]\n" : "" }

    func row(_ item: ItemRecord, first: Bool) -> String {
        switch self {
        case .ndjson:
            return json(item) + "\n"
        case .json:
            return (first ? "" : ",") + json(item)
        case .csv:
            let fields = [
                String(item.seq), item.status.name, String(item.attempts), item.error?.code ?? "",
                item.error?.message ?? "", item.output?.text ?? "", item.payload?.text ?? "",
            ]
            return fields.map(Self.csvField).joined(separator: ",") + "\n"
        }
    }

    func json(_ item: ItemRecord) -> String {
        (try? JSONText(encoding: WireFormat.item(item, includingPayload: true)).text) ?? "{}"
    }

    /// RFC 4180 quoting, after neutralising a formula: a cell that starts
    /// with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`
    /// so a spreadsheet shows it as text instead of running it (OWASP).
    static func csvField(_ text: String) -> String {
        let text = text.unicodeScalars.first.map { "=+-@\t\r".unicodeScalars.contains($0) } == true ? "'" + text : text
        // By scalar: "\r\n" is one Character, equal to neither "\r" nor "\n".
        guard text.unicodeScalars.contains(where: { ",\"\n\r".unicodeScalars.contains($0) }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Splits a streamed body into lines, holding at most one partial line.
struct LineSplitter {
    let maxLine: Int
    private var partial: [UInt8] = []
    private var number = 0

    init(maxLine: Int) {
        self.maxLine = maxLine
    }

    mutating func feed(_ buffer: some Collection<UInt8>, _ body: ([UInt8], Int) throws -> Void) throws {
        for byte in buffer {
            if byte == 0x0A {
                try emit(body)
            } else {
                partial.append(byte)
                if partial.count > maxLine {
                    throw Problem(.contentTooLarge, "line \(number + 1) is longer than \(maxLine) bytes")
                }
            }
        }
    }

    mutating func feed(_ buffer: ByteBuffer, _ body: ([UInt8], Int) throws -> Void) throws {
        try feed(buffer.readableBytesView, body)
    }

    mutating func finish(_ body: ([UInt8], Int) throws -> Void) throws {
        if !partial.isEmpty { try emit(body) }
    }

    private mutating func emit(_ body: ([UInt8], Int) throws -> Void) throws {
        number += 1
        var line = partial
        partial.removeAll(keepingCapacity: true)
        if line.last == 0x0D { line.removeLast() }
        guard !line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) else { return }
        try body(line, number)
    }
}
