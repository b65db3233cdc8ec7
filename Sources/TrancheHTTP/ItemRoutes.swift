import CompressNIO
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TrancheEngine

/// `/v1/batches/{id}/items`, `/errors` and `/export`: uploads in, results out.
extension TrancheServer {
    func addItemRoutes(_ v1: RouterGroup<TrancheRequestContext>) {
        v1.post("batches/:id/items") { request, context in try await append(request, context) }
        v1.get("batches/:id/items") { request, context in try await items(request, context) }
        v1.get("batches/:id/errors") { _, context in
            let record = try await owned(context)
            let groups = try await store.errorGroups(of: record.id, samples: 5)
            return Self.json(["errors": .array(groups.map(Views.errorGroup))])
        }
        v1.get("batches/:id/export") { request, context in try await export(request, context) }
    }

    func items(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let query = request.uri.queryParameters
        let status = try query.get("status").map(itemStatus)
        var after: Int64?
        if let cursor = query.get("cursor") {
            guard let seq = Int64(cursor) else { throw Problem(.badRequest, "cursor is not valid") }
            after = seq
        }
        let limit = try limit(request, default: 100)
        let page = try await store.items(of: record.id, status: status, afterSeq: after, limit: limit)
        let payload = query.get("include") == "item"
        let next: JSONValue = page.count == limit ? page.last.map { .string(String($0.seq)) } ?? .null : .null
        return Self.json([
            "items": .array(page.map { WireFormat.item($0, includingPayload: payload) }), "next_cursor": next,
        ])
    }

    func append(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let query = request.uri.queryParameters
        var seq = record.counts.total
        if let start = query.get("start_seq") {
            guard let value = Int64(start), value >= 0 else {
                throw Problem(.badRequest, "start_seq must be 0 or more")
            }
            seq = value
        }
        let contentType = request.headers[.contentType]?.lowercased() ?? "application/json"
        var inserted = 0
        var rejected = 0
        var errors: [JSONValue] = []
        var total = record.counts.total
        func flush(_ items: inout [NewItem]) async throws {
            guard !items.isEmpty else { return }
            try await admit(items.count, tenant: context.tenant)
            let result = try await engine.append(to: record.id, startSeq: seq, items: items)
            inserted += result.inserted
            total = result.total
            seq += Int64(items.count)
            items.removeAll(keepingCapacity: true)
        }
        var pending: [NewItem] = []
        if contentType.hasPrefix("application/x-ndjson") || contentType.hasPrefix("application/jsonl") {
            var splitter = LineSplitter(maxLine: configuration.maxItemBytes)
            var received = 0
            for try await buffer in request.body {
                received += buffer.readableBytes
                guard received <= configuration.maxUploadBytes else {
                    try await flush(&pending)
                    throw Problem(.contentTooLarge, "the upload is larger than \(configuration.maxUploadBytes) bytes")
                }
                try splitter.feed(buffer) { line, number in
                    let item = Self.ndjsonItem(line, number: number)
                    if let rejection = item.rejection {
                        rejected += 1
                        if errors.count < 10 {
                            errors.append(["line": .number(Double(number)), "message": .string(rejection.message)])
                        }
                    }
                    pending.append(item)
                }
                if pending.count >= 5_000 { try await flush(&pending) }
            }
            try splitter.finish { line, number in pending.append(Self.ndjsonItem(line, number: number)) }
            try await flush(&pending)
        } else {
            let values = try await request.decodeJSON([JSONValue].self, limit: configuration.maxBodyBytes)
            guard values.count <= configuration.maxInlineItems else {
                throw Problem(
                    .contentTooLarge, "at most \(configuration.maxInlineItems) items per JSON request; use NDJSON")
            }
            pending = try values.map { NewItem(payload: try JSONText(encoding: $0)) }
            try await flush(&pending)
        }
        let updated = try await store.batch(record.id) ?? record
        return Self.json([
            "inserted": .number(Double(inserted)),
            "rejected": .number(Double(rejected)),
            "total": Views.number(max(total, updated.counts.total)),
            "errors": .array(errors),
            "status": .string(updated.status.rawValue),
        ])
    }

    static func ndjsonItem(_ line: [UInt8], number: Int) -> NewItem {
        let text = String(decoding: line, as: UTF8.self)
        do {
            try JSONSyntax.validate(text)
            return NewItem(payload: JSONText(unchecked: text))
        } catch {
            return NewItem(
                payload: (try? JSONText(encoding: JSONValue.string(text))) ?? .null,
                rejection: .permanent("invalid_json", "line \(number): \(error.description)"))
        }
    }

    func export(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        let query = request.uri.queryParameters
        let format = query.get("format") ?? "ndjson"
        guard let kind = ExportFormat(rawValue: format) else {
            throw Problem(.badRequest, "format must be ndjson, csv or json")
        }
        let status = try query.get("status").map(itemStatus)
        let gzip = request.headers[.acceptEncoding]?.lowercased().contains("gzip") == true
        var headers: HTTPFields = [
            .contentType: kind.contentType,
            .contentDisposition: "attachment; filename=\"\(record.id.rawValue).\(kind.rawValue)\"",
        ]
        if gzip { headers[.contentEncoding] = "gzip" }
        let store = self.store
        let body = ResponseBody { writer in
            let compressor = gzip ? try ZlibCompressor(algorithm: .gzip) : nil
            func emit(_ text: String, final: Bool = false) async throws {
                var buffer = ByteBuffer(string: text)
                if let compressor {
                    let compressed = try buffer.compressStream(with: compressor, flush: final ? .finish : .sync)
                    try await writer.write(compressed)
                } else if buffer.readableBytes > 0 {
                    try await writer.write(buffer)
                }
            }
            try await emit(kind.header)
            var after: Int64? = nil
            var first = true
            while true {
                let page = try await store.items(of: record.id, status: status, afterSeq: after, limit: 1_000)
                var text = ""
                for item in page {
                    text += kind.row(item, first: first)
                    first = false
                }
                try await emit(text)
                guard page.count == 1_000, let last = page.last else { break }
                after = last.seq
            }
            try await emit(kind.footer, final: true)
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: headers, body: body)
    }
}
