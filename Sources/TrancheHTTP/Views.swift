import Foundation
import TrancheEngine

/// The JSON the API answers with, built in one place per resource.
enum Views {
    nonisolated(unsafe) static let dateFormatter: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()

    static func date(_ date: Date?) -> JSONValue {
        date.map { .string(dateFormatter.string(from: $0)) } ?? .null
    }

    static func number(_ value: Int64) -> JSONValue { .number(Double(value)) }

    static func counts(_ counts: BatchCounts) -> JSONValue {
        (try? JSONText(encoding: counts).value()) ?? .null
    }

    static func options(_ options: BatchOptions) -> JSONValue {
        (try? JSONText(encoding: options).value()) ?? .null
    }

    static func batch(
        _ record: BatchRecord, rate: Double, eta: Double?, errors: [ErrorSample: String] = [:]
    ) -> JSONValue {
        var view: [String: JSONValue] = [
            "id": .string(record.id.rawValue),
            "type": .string(record.type),
            "status": .string(record.status.rawValue),
            "dry_run": .bool(record.dryRun),
            "priority": .number(Double(record.priority)),
            "sealed": .bool(record.sealed),
            "context": (try? record.context.value()) ?? .null,
            "options": options(record.options),
            "counts": counts(record.counts),
            "progress": .number((record.counts.progress * 10).rounded() / 10),
            "rate": .number((rate * 10).rounded() / 10),
            "eta_seconds": eta.map { .number($0.rounded()) } ?? .null,
            "created_at": date(record.createdAt),
            "confirmed_at": date(record.confirmedAt),
            "started_at": date(record.startedAt),
            "completed_at": date(record.completedAt),
            "expires_at": date(record.expiresAt),
            "failure_reason": record.failureReason.map(JSONValue.string) ?? .null,
            "result": (try? record.result?.value()) ?? .null,
        ]
        if !errors.isEmpty {
            view["errors"] = .array(
                errors.sorted { $0.key.seq < $1.key.seq }.map { sample, code in
                    ["seq": number(sample.seq), "code": .string(code), "message": .string(sample.message)]
                })
        } else {
            view["errors"] = []
        }
        return .object(view)
    }

    static func item(_ item: ItemRecord, payload: Bool) -> JSONValue {
        var view: [String: JSONValue] = [
            "seq": number(item.seq),
            "status": .string(item.status.name),
            "attempts": .number(Double(item.attempts)),
            "output": (try? item.output?.value()) ?? .null,
            "error": item.error.map(error) ?? .null,
            "updated_at": date(item.updatedAt),
        ]
        if payload { view["item"] = (try? item.payload?.value()) ?? .null }
        if let next = item.nextAttemptAt { view["next_attempt_at"] = date(next) }
        return .object(view)
    }

    static func error(_ error: ItemError) -> JSONValue {
        ["code": .string(error.code), "message": .string(error.message), "category": .string(error.category.rawValue)]
    }

    static func errorGroup(_ group: ErrorGroup) -> JSONValue {
        [
            "code": .string(group.code),
            "category": .string(group.category.rawValue),
            "count": number(group.count),
            "samples": .array(group.samples.map { ["seq": number($0.seq), "message": .string($0.message)] }),
        ]
    }

    static func event(_ event: BatchEvent) -> JSONValue {
        [
            "id": number(event.id),
            "batch_id": .string(event.batchID.rawValue),
            "type": .string(event.type.rawValue),
            "at": date(event.at),
            "data": event.data,
        ]
    }
}
