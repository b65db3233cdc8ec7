/// Conversions for numbers that come from outside (a request, an item, a
/// stored row, a remote answer): they never trap, whatever the value.
///
/// `Int(someDouble)` traps on NaN, on infinities and on anything beyond
/// Int's range, and `Duration.seconds(someDouble)` traps on values beyond
/// Duration's range; these are the conversions to use instead.
extension Int {
    /// `value` rounded toward zero and held within Int's range; NaN is 0.
    public init(saturating value: Double) {
        if value.isNaN {
            self = 0
        } else if value >= 9.2e18 {
            self = .max
        } else if value <= -9.2e18 {
            self = .min
        } else {
            self = Int(value.rounded(.towardZero))
        }
    }
}

extension FixedWidthInteger {
    /// `self + other` held within the type's range: a counter, an attempt
    /// count or a time read from a stored row may hold any value, and one
    /// more must not trap.
    public func adding(saturating other: Self) -> Self {
        let (sum, overflow) = addingReportingOverflow(other)
        guard overflow else { return sum }
        return other > 0 ? .max : .min
    }

    /// The value held within `range` (`Double.bounded(to:)` for integers).
    public func clamped(to range: ClosedRange<Self>) -> Self {
        Swift.min(Swift.max(self, range.lowerBound), range.upperBound)
    }
}

extension Duration {
    /// The longest wait a bounded conversion yields: 100 years, far beyond
    /// any limit Tranche accepts and far within Duration's range.
    public static let longestBoundedWait: Double = 100 * 365 * 86_400

    /// The duration in seconds, for rates and timings.
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// `seconds` as a duration held within `0...longestBoundedWait`: NaN and
    /// negative values are zero, larger ones the longest wait.
    public static func seconds(bounded seconds: Double) -> Duration {
        guard seconds > 0 else { return .zero }
        let milliseconds = (min(seconds, longestBoundedWait) * 1_000).rounded(.up)
        return .milliseconds(Int64(milliseconds))
    }
}

extension Double {
    /// The value held within `range`; NaN becomes `nan` when given (a
    /// setting's default), otherwise `range.lowerBound`.
    public func bounded(to range: ClosedRange<Double>, nan: Double? = nil) -> Double {
        isNaN ? nan ?? range.lowerBound : Swift.min(Swift.max(self, range.lowerBound), range.upperBound)
    }
}

extension Double {
    /// Short text for messages: integers without a fraction, others to two
    /// decimals, tiny and huge values as Swift prints them. Never traps.
    package var shortText: String {
        guard isFinite, abs(self) < 1e15 else { return "\(self)" }
        if self == rounded() { return String(Int64(self)) }
        guard abs(self) >= 0.01 else { return "\(self)" }
        let rounded = (self * 100).rounded() / 100
        return rounded == rounded.rounded() ? String(Int64(rounded)) : "\(rounded)"
    }
}
