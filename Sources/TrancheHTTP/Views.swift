import Foundation
import TrancheEngine

/// The JSON the API answers with, built in one place per resource.
enum Views {
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
            "created_at": WireFormat.date(record.createdAt),
            "confirmed_at": WireFormat.date(record.confirmedAt),
            "started_at": WireFormat.date(record.startedAt),
            "completed_at": WireFormat.date(record.completedAt),
            "expires_at": WireFormat.date(record.expiresAt),
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

    static func errorGroup(_ group: ErrorGroup) -> JSONValue {
        [
            "code": .string(group.code),
            "category": .string(group.category.rawValue),
            "count": number(group.count),
            "samples": .array(group.samples.map { ["seq": number($0.seq), "message": .string($0.message)] }),
        ]
    }

    static func node(_ node: NodeRecord) -> JSONValue {
        [
            "id": .string(node.id),
            "role": .string(node.role),
            "host": .string(node.host),
            "pid": .number(Double(node.pid)),
            "workers": .number(Double(node.workers)),
            "leader": .bool(node.isLeader),
            "chunks": number(node.chunks),
            "running_items": number(node.runningItems),
            "started_at": WireFormat.date(node.startedAt),
            "heartbeat_at": WireFormat.date(node.heartbeatAt),
        ]
    }

    static func event(_ event: BatchEvent) -> JSONValue {
        [
            "id": number(event.id),
            "batch_id": .string(event.batchID.rawValue),
            "type": .string(event.type.rawValue),
            "at": WireFormat.date(event.at),
            "data": event.data,
        ]
    }
}
