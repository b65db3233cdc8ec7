import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TrancheEngine

/// `POST /v1/batches`: a new batch, inline or open for uploads, answered at
/// once, queued, or run synchronously; safe to repeat with an idempotency key.
extension TrancheServer {
    /// `POST /v1/batches`. With an idempotency key (the `Idempotency-Key`
    /// header or `options.idempotency_key`), the key's record and the batch
    /// are stored in one transaction: a repeat of the request, even after a
    /// crash, answers the batch the key names; the same key with a different
    /// body is a 422.
    func create(_ request: Request, _ context: TrancheRequestContext) async throws -> Response {
        let buffer = try await request.collectBody(limit: configuration.maxBodyBytes)
        var creation = try creationRequest(request.decodeCreation(from: buffer), context)
        let key = try idempotencyKey(request, creation, fingerprint: Self.fingerprint(of: String(buffer: buffer)))
        creation.submission.options.idempotencyKey = key?.key
        if let key, let found = try await store.idempotencyRecord(tenant: key.tenant, key: key.key),
            let existing = try await store.batch(found.batchID)
        {
            guard found.fingerprint == key.fingerprint else { throw Self.idempotencyMismatch }
            return try await answer(creation, existing, replayed: true)
        }
        try await checkTenantQuotas(context.tenant, items: nil, newBatch: true)
        if let items = creation.items { try await admit(items.count, tenant: context.tenant) }
        let prepared: (batch: NewBatch, items: [NewItem])
        do {
            prepared = try engine.prepareBatch(creation.submission, items: creation.items)
        } catch let error as EngineError where error.code == .invalidSubmission {
            // JSON of the right shape whose values the strategy refuses (a
            // context out of range): unprocessable, like a bad option.
            throw Problem(.unprocessableContent, error.message)
        }
        try await engine.registerPrepareTypes()
        guard let key else {
            let record = try await store.createBatch(prepared.batch, items: prepared.items)
            return try await answer(creation, try await engine.accept(record), replayed: false)
        }
        switch try await store.createBatch(prepared.batch, items: prepared.items, idempotency: key) {
        case .created(let record):
            return try await answer(creation, try await engine.accept(record), replayed: false)
        case .existing(let record):
            return try await answer(creation, record, replayed: true)
        case .mismatch:
            throw Self.idempotencyMismatch
        }
    }

    /// A checked `POST /v1/batches` body: what to store and how to answer.
    struct CreationRequest {
        var submission: Submission
        /// Nil: an open batch, filled by uploads.
        var items: [JSONText]?
        var synchronous: Bool
    }

    func creationRequest(_ body: CreateBatchRequest, _ context: TrancheRequestContext) throws -> CreationRequest {
        let mode = body.mode ?? "auto"
        guard ["auto", "sync", "async"].contains(mode) else {
            throw Problem(.unprocessableContent, "mode must be auto, sync or async, got '\(mode)'")
        }
        var options = body.options ?? BatchOptions()
        if let confirm = body.requireConfirmation { options.requireConfirmation = confirm }
        do {
            try options.validate()
        } catch {
            throw Problem(.unprocessableContent, "options.\(error.message)")
        }
        let priority = body.priority ?? 0
        let priorities = BatchOptions.Limits.priority
        guard priorities.contains(priority) else {
            throw Problem(
                .unprocessableContent,
                "priority must be between \(priorities.lowerBound) and \(priorities.upperBound), got \(priority)")
        }
        var submission = Submission(
            type: body.type, context: try JSONText(encoding: body.context ?? [:]), options: options,
            dryRun: body.dryRun ?? false, priority: priority, owner: context.tenant)
        submission.then = try body.then.map(successor)
        guard let values = body.items else {
            return CreationRequest(submission: submission, items: nil, synchronous: false)
        }
        guard values.count <= configuration.maxInlineItems else {
            throw Problem(
                .contentTooLarge,
                "\(values.count) items inline; at most \(configuration.maxInlineItems) — upload more with POST /v1/batches/{id}/items"
            )
        }
        let items = try values.enumerated().map { index, value in try itemText(value, index: index) }
        let synchronous = mode == "sync" || (mode == "auto" && items.count <= configuration.syncThreshold)
        return CreationRequest(submission: submission, items: items, synchronous: synchronous)
    }

    /// An item of a JSON body (create or append) as stored: a `413` naming
    /// the item when it is larger than `maxItemBytes`, as an NDJSON line is.
    func itemText(_ value: JSONValue, index: Int) throws -> JSONText {
        let text = try JSONText(encoding: value)
        guard text.text.utf8.count <= configuration.maxItemBytes else {
            throw Problem(.contentTooLarge, "item \(index) is larger than \(configuration.maxItemBytes) bytes")
        }
        return text
    }

    /// The request's idempotency key: the `Idempotency-Key` header or
    /// `options.idempotency_key` (the same key if both are given), which the
    /// batch's options then carry. Nil without either.
    func idempotencyKey(_ request: Request, _ creation: CreationRequest, fingerprint: String) throws
        -> IdempotencyKey?
    {
        let header = request.headers[.idempotencyKey]
        let option = creation.submission.options.idempotencyKey
        if let header, let option, header != option {
            throw Problem(
                .unprocessableContent, "the Idempotency-Key header and options.idempotency_key must be the same key")
        }
        guard let key = header ?? option else { return nil }
        guard !key.isEmpty, key.utf8.count <= 255 else {
            throw Problem(.badRequest, "Idempotency-Key must be 1 to 255 bytes")
        }
        return IdempotencyKey(tenant: creation.submission.owner, key: key, fingerprint: fingerprint)
    }

    static let idempotencyMismatch = Problem(
        .unprocessableContent, "this Idempotency-Key was used with a different request body")

    /// The answer to a create, and to its repeats: an open batch, a queued
    /// one or one waiting for confirmation is a 202; a dry run answers its
    /// report; a synchronous batch is waited for (at most `syncTimeout`)
    /// and answered whole with its outcomes.
    func answer(_ creation: CreationRequest, _ record: BatchRecord, replayed: Bool) async throws -> Response {
        func reply(_ status: HTTPResponse.Status, _ view: some Encodable) -> Response {
            var response = Self.json(view, status: status)
            if replayed { response.headers[.idempotentReplayed] = "true" }
            return response
        }
        guard creation.items != nil else { return reply(.accepted, AcceptedView(record)) }
        if record.dryRun { return reply(.ok, try await batchView(record)) }
        guard creation.synchronous, !record.options.requireConfirmation,
            let ended = try await waitForEnd(record.id, seconds: configuration.syncTimeout)
        else { return reply(.accepted, AcceptedView(record)) }
        return reply(.ok, try await synchronousResult(ended))
    }

    /// A finished batch with every item's outcome and the error groups.
    func synchronousResult(_ ended: BatchRecord) async throws -> BatchView {
        var outcomes: [ItemView] = []
        var after: Int64? = nil
        while true {
            let page = try await store.items(of: ended.id, status: nil, afterSeq: after, limit: 1_000)
            outcomes += page.map { ItemView($0, includingPayload: false) }
            guard page.count == 1_000, let last = page.last else { break }
            after = last.seq
        }
        let groups = try await store.errorGroups(of: ended.id, samples: 5)
        var view = try await batchView(ended)
        view.queued = false
        view.items = outcomes
        view.errorGroups = groups.map(ErrorGroupView.init)
        return view
    }

    /// Answers 429 at once when `count` more items would put the tenant over
    /// its queue limit or its `max_queued` quota.
    func admit(_ count: Int, tenant: String) async throws {
        try await checkTenantQuotas(tenant, items: count, newBatch: false)
        let queued = try await store.queuedItems(owner: tenant)
        guard queued + Int64(count) <= configuration.maxQueuedItemsPerTenant else {
            throw Problem(
                .tooManyRequests,
                "\(queued) items are queued for this tenant; the limit is \(configuration.maxQueuedItemsPerTenant)",
                retryAfter: 5)
        }
    }

    func waitForEnd(_ id: BatchID, seconds: Double) async throws -> BatchRecord? {
        try await withThrowingTaskGroup(of: BatchRecord?.self) { group in
            group.addTask { try await engine.waitForEnd(id) }
            group.addTask {
                try await Task.sleep(for: .seconds(bounded: seconds))
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// What identifies a request body for `Idempotency-Key`: its SHA-256.
    public static func fingerprint(of body: String) -> String {
        APIKeys.hash(body)
    }
}
