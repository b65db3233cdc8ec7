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
            return Self.json(ErrorGroupList(errors: groups.map(ErrorGroupView.init)))
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
        let include = query.get("include")
        guard include == nil || include == "item" else { throw Problem(.badRequest, "include must be item") }
        let payload = include == "item"
        let next = page.count == limit ? page.last.map { String($0.seq) } : nil
        return Self.json(ItemPage(items: page.map { ItemView($0, includingPayload: payload) }, nextCursor: next))
    }

    /// `POST /v1/batches/{id}/items`: a JSON array, or an NDJSON stream
    /// appended in blocks as it arrives. Idempotent by `start_seq`.
    func append(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let record = try await owned(context)
        var startSeq = record.counts.total
        if let start = request.uri.queryParameters.get("start_seq") {
            guard let value = Int64(start), value >= 0 else {
                throw Problem(.badRequest, "start_seq must be 0 or more")
            }
            // The store refuses a gap too; refusing it here first keeps the
            // seqs counted from it (start_seq + offset) far from Int64.max.
            guard value <= record.counts.total else {
                throw Problem(
                    .conflict,
                    "items must be appended at seq \(record.counts.total) or earlier (got start_seq \(value))")
            }
            startSeq = value
        }
        var upload = Upload(batch: record.id, tenant: context.tenant, seq: startSeq, total: record.counts.total)
        let contentType = request.headers[.contentType]?.lowercased() ?? "application/json"
        if contentType.hasPrefix("application/x-ndjson") || contentType.hasPrefix("application/jsonl") {
            try await appendLines(of: request.body, to: &upload)
        } else {
            let body = try await request.collectBody(limit: configuration.maxBodyBytes)
            guard case .array(let values) = try request.parseJSON(body) else {
                throw Problem(
                    .unprocessableContent, "the body is not a valid request: it should be a JSON array of items")
            }
            guard values.count <= configuration.maxInlineItems else {
                throw Problem(
                    .contentTooLarge, "at most \(configuration.maxInlineItems) items per JSON request; use NDJSON")
            }
            // Every item is checked before any is appended: a refused body stores nothing.
            let items = try values.enumerated().map { index, value in try itemText(value, index: index) }
            for item in items { upload.add(NewItem(payload: item), line: nil) }
            try await flush(&upload)
        }
        let updated = try await store.batch(record.id) ?? record
        return Self.json(
            AppendView(
                inserted: upload.inserted, rejected: upload.rejected, total: max(upload.total, updated.counts.total),
                errors: upload.errors, status: updated.status))
    }

    /// Appends an NDJSON stream line by line, in blocks of 5,000, holding at most one block.
    func appendLines(of body: RequestBody, to upload: inout Upload) async throws {
        var splitter = LineSplitter(maxLine: configuration.maxItemBytes)
        var received = 0
        for try await buffer in body {
            received += buffer.readableBytes
            guard received <= configuration.maxUploadBytes else {
                try await flush(&upload)
                throw Problem(.contentTooLarge, "the upload is larger than \(configuration.maxUploadBytes) bytes")
            }
            try splitter.feed(buffer) { line, number in
                upload.add(try Self.ndjsonItem(line, number: number), line: number)
            }
            if upload.pending.count >= 5_000 { try await flush(&upload) }
        }
        try splitter.finish { line, number in upload.add(try Self.ndjsonItem(line, number: number), line: number) }
        try await flush(&upload)
    }

    /// Appends the upload's waiting items (429 when the tenant's queue is full).
    func flush(_ upload: inout Upload) async throws {
        guard !upload.pending.isEmpty else { return }
        try await admit(upload.pending.count, tenant: upload.tenant)
        let result = try await engine.append(to: upload.batch, startSeq: upload.seq, items: upload.pending)
        upload.inserted += result.inserted
        upload.total = result.total
        upload.seq += Int64(upload.pending.count)
        upload.pending.removeAll(keepingCapacity: true)
    }

    /// An NDJSON line as an item: a line that is not JSON is stored refused
    /// (its text kept as a string); a line that is not UTF-8 is a 400
    /// naming the line and the byte, since no text could keep it.
    static func ndjsonItem(_ line: [UInt8], number: Int) throws -> NewItem {
        do {
            try JSONSyntax.validate(line)
            return NewItem(payload: JSONText(unchecked: String(decoding: line, as: UTF8.self)))
        } catch {
            // The scan stops at the first fault: the rest of a line that is
            // not JSON may still hold bytes that are not UTF-8.
            if let offset = error.isInvalidUTF8 ? error.offset : JSONSyntax.firstInvalidUTF8(in: line) {
                throw Problem(.badRequest, "line \(number) is not valid UTF-8 at byte \(offset) of the line")
            }
            return NewItem(
                payload: JSONText(unchecked: JSONValue.string(String(decoding: line, as: UTF8.self)).jsonText),
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
                    // zlib refuses a second sync flush with no input since the
                    // last one (Z_BUF_ERROR), which cut the answer short.
                    guard buffer.readableBytes > 0 || final else { return }
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

/// An upload in progress: the items waiting to be appended and what it has done so far.
struct Upload {
    let batch: BatchID
    let tenant: String
    /// Where the waiting items go.
    var seq: Int64
    var total: Int64
    var pending: [NewItem] = []
    var inserted = 0
    var rejected = 0
    var errors: [AppendView.LineError] = []

    init(batch: BatchID, tenant: String, seq: Int64, total: Int64) {
        self.batch = batch
        self.tenant = tenant
        self.seq = seq
        self.total = total
    }

    /// Queues an item; a line refused at upload is counted, and reported among the first ten.
    mutating func add(_ item: NewItem, line: Int?) {
        if let rejection = item.rejection {
            rejected += 1
            if let line, errors.count < 10 { errors.append(.init(line: line, message: rejection.message)) }
        }
        pending.append(item)
    }
}
