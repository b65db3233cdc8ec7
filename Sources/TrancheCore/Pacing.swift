/// A token bucket: `rate` tokens a second, holding at most `burst`.
///
/// Pure: the caller passes the time (seconds on a monotonic clock), so it is
/// tested without sleeping.
public struct TokenBucket: Sendable, Hashable {
    public var rate: Double
    public var burst: Double
    private var tokens: Double
    private var updatedAt: Double?

    public init(rate: Double, burst: Double? = nil) {
        self.rate = rate
        self.burst = max(1, burst ?? rate)
        self.tokens = 1
    }

    /// A bucket as a store holds it: `tokens` left at `updatedAt` (seconds).
    public init(rate: Double, burst: Double? = nil, tokens: Double, updatedAt: Double) {
        self.init(rate: rate, burst: burst)
        self.tokens = tokens.isFinite ? min(self.burst, tokens) : 1
        self.updatedAt = updatedAt.isFinite ? updatedAt : nil
    }

    /// Tokens held after the last change, for a store to save.
    public var storedTokens: Double { tokens }
    /// When the tokens were last counted (seconds), for a store to save.
    public var storedUpdatedAt: Double? { updatedAt }

    /// Takes up to `want` whole tokens at `now` without going below zero:
    /// how many were granted, and when none was, how long until one is.
    ///
    /// A node draws a small grant from its cluster's shared bucket and spends
    /// it locally, so the cluster exceeds the rate by at most one grant per node.
    /// A clock behind the last update (another node's) counts as no time passed.
    public mutating func grant(want: Int, now: Double) -> (granted: Int, wait: Double) {
        refill(now: now)
        let whole = tokens.isFinite ? max(0, tokens.rounded(.down)) : 0
        let granted = min(max(0, want), Int(saturating: whole))
        tokens -= Double(granted)
        guard granted == 0 else { return (granted, 0) }
        let rate = self.rate > 0 && self.rate.isFinite ? self.rate : 1
        return (0, max(0.001, (1 - tokens) / rate))
    }

    private mutating func refill(now: Double) {
        if let updatedAt {
            tokens = min(burst, tokens + max(0, now - updatedAt) * rate)
            self.updatedAt = max(updatedAt, now)
        } else {
            updatedAt = now
        }
    }

    /// Takes one token at `now`; returns how long to wait first (0 when one
    /// was available). The token is reserved either way, so waiters queue fairly.
    public mutating func reserve(now: Double) -> Double {
        refill(now: now)
        tokens -= 1
        return tokens >= 0 ? 0 : -tokens / rate
    }
}
