import ArgumentParser
import TrancheCore

/// `--host-limit HOST=RATE[,max=N]` of `serve` and `worker`: a rate (and a
/// cap on calls at once) shared by every batch that calls HOST, across the cluster.
enum HostLimits {
    /// Reads every entry; a malformed one is refused naming the flag.
    static func parse(_ entries: [String]) throws -> [String: RateLimit] {
        var limits: [String: RateLimit] = [:]
        for entry in entries {
            let usage = "--host-limit takes HOST=RATE[,max=N] (RATE like 20/s, 600/m), got '\(entry)'"
            guard let equals = entry.firstIndex(of: "=") else { throw ValidationError(usage) }
            let host = entry[..<equals].lowercased()
            guard !host.isEmpty, host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || ".-:[]".contains($0)) })
            else { throw ValidationError(usage) }
            var limit = RateLimit()
            for part in entry[entry.index(after: equals)...].split(separator: ",") {
                if part.hasPrefix("max=") {
                    guard let max = Int(part.dropFirst(4)), BatchOptions.Limits.maxConcurrent.contains(max) else {
                        let range = BatchOptions.Limits.maxConcurrent
                        throw ValidationError(
                            "--host-limit: max must be between \(range.lowerBound) and \(range.upperBound), in '\(entry)'"
                        )
                    }
                    limit.maxConcurrent = max
                } else {
                    do {
                        limit.rate = try RateLimit.parse(String(part)).rate
                    } catch {
                        throw ValidationError("--host-limit: \(error) in '\(entry)'")
                    }
                    if let rate = limit.rate, !BatchOptions.Limits.rate.contains(rate) {
                        throw ValidationError("--host-limit: the rate is out of range in '\(entry)'")
                    }
                }
            }
            guard limit.rate != nil || limit.maxConcurrent != nil else { throw ValidationError(usage) }
            guard limits.updateValue(limit, forKey: host) == nil else {
                throw ValidationError("--host-limit names \(host) twice")
            }
        }
        return limits
    }
}
