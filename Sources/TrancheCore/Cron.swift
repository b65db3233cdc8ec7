public import Foundation

/// A five-field cron expression (`minute hour day-of-month month
/// day-of-week`), as schedules use it, evaluated in a time zone.
///
/// Each field takes `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or
/// `a/n` (from `a` to the field's end), and comma-separated lists of these.
/// Months take `JAN`–`DEC` and days of the week `SUN`–`SAT` (any case); day
/// of the week 0 and 7 are both Sunday. `@yearly` (`@annually`), `@monthly`,
/// `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for their usual
/// expressions. When both day fields are restricted (neither starts with
/// `*`), a day matches if either does, as in Vixie cron.
///
/// Times are wall-clock times in the zone: a time that a daylight-saving
/// change skips (02:30 when clocks jump from 02:00 to 03:00) fires at the
/// same offset after the jump (03:30); a time that occurs twice (when clocks
/// go back) fires once, at its first occurrence.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// Minutes 0–59 that match, sorted.
    public let minutes: [Int]
    /// Hours 0–23, sorted.
    public let hours: [Int]
    /// Days of the month 1–31.
    public let daysOfMonth: Set<Int>
    /// Months 1–12.
    public let months: Set<Int>
    /// Days of the week, 0 (Sunday) to 6.
    public let daysOfWeek: Set<Int>
    /// Whether the day-of-month field is restricted (does not start with `*`).
    public let restrictsDayOfMonth: Bool
    /// Whether the day-of-week field is restricted.
    public let restrictsDayOfWeek: Bool
    /// The expression as written.
    public let description: String

    /// Why an expression was refused: the field and the problem.
    public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        public var description: String
    }

    private struct Field {
        var name: String
        var range: ClosedRange<Int>
        var names: [String] = []
    }

    private static let fields = [
        Field(name: "minute", range: 0...59),
        Field(name: "hour", range: 0...23),
        Field(name: "day of month", range: 1...31),
        Field(
            name: "month", range: 1...12,
            names: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
        Field(name: "day of week", range: 0...7, names: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
    ]

    private static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]

    /// Parses `text`; throws ``ParseError`` naming the field at fault.
    public init(_ text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let expanded = Self.macros[trimmed.lowercased()] ?? trimmed
        let parts = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard parts.count == 5 else {
            throw ParseError(
                description: "expected 5 fields (minute hour day-of-month month day-of-week), got \(parts.count)")
        }
        var sets: [Set<Int>] = []
        for (part, field) in zip(parts, Self.fields) {
            sets.append(try Self.parse(part, field))
        }
        minutes = sets[0].sorted()
        hours = sets[1].sorted()
        daysOfMonth = sets[2]
        months = sets[3]
        daysOfWeek = Set(sets[4].map { $0 % 7 })
        restrictsDayOfMonth = !parts[2].hasPrefix("*")
        restrictsDayOfWeek = !parts[4].hasPrefix("*")
        description = trimmed
    }

    private static func parse(_ text: String, _ field: Field) throws -> Set<Int> {
        func fail(_ problem: String) -> ParseError {
            ParseError(description: "\(field.name): \(problem)")
        }
        func value(_ token: Substring) throws -> Int {
            if let number = Int(token) {
                guard field.range.contains(number) else {
                    throw fail("\(number) is outside \(field.range.lowerBound)-\(field.range.upperBound)")
                }
                return number
            }
            if let index = field.names.firstIndex(of: token.uppercased()) {
                return field.range.lowerBound + index
            }
            throw fail("'\(token)' is not a value")
        }
        var result = Set<Int>()
        for element in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !element.isEmpty else { throw fail("an empty list element") }
            let pieces = element.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw fail("'\(element)' has more than one step") }
            var step = 1
            if pieces.count == 2 {
                guard let number = Int(pieces[1]), number >= 1, number <= field.range.upperBound else {
                    throw fail("step '\(pieces[1])' must be 1 to \(field.range.upperBound)")
                }
                step = number
            }
            let base = pieces[0]
            let bounds: ClosedRange<Int>
            if base == "*" {
                bounds = field.range
            } else if let dash = base.firstIndex(of: "-") {
                let low = try value(base[..<dash])
                let high = try value(base[base.index(after: dash)...])
                guard low <= high else { throw fail("range \(base) runs backwards") }
                bounds = low...high
            } else {
                let start = try value(base)
                // `a/n` runs from a to the field's end; a plain value is itself.
                bounds = pieces.count == 2 ? start...field.range.upperBound : start...start
            }
            result.formUnion(stride(from: bounds.lowerBound, through: bounds.upperBound, by: step))
        }
        return result
    }

    /// Whether the expression's day rules match a day: its day of the month,
    /// month and day of the week (0 is Sunday).
    public func matchesDay(day: Int, month: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        let byMonthDay = daysOfMonth.contains(day)
        let byWeekday = daysOfWeek.contains(weekday)
        switch (restrictsDayOfMonth, restrictsDayOfWeek) {
        case (true, true): return byMonthDay || byWeekday
        case (true, false): return byMonthDay
        case (false, true): return byWeekday
        case (false, false): return true
        }
    }

    /// The first time after `date` (strictly) that the expression matches in
    /// `timeZone`, or nil when none comes within eight years (`0 0 30 2 *`).
    public func nextDate(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let start = calendar.dateComponents([.year, .month, .day], from: date)
        guard
            var day = calendar.date(
                from: DateComponents(year: start.year, month: start.month, day: start.day, hour: 12))
        else { return nil }
        // The day before too: a time early in the next local day can lie
        // before `date` in absolute terms only across a zone change, never
        // the other way; starting one day back costs little and misses nothing.
        day = calendar.date(byAdding: .day, value: -1, to: day) ?? day
        // On the day of `date`, hours well before its own cannot come after
        // it (two hours of margin for a daylight-saving shift).
        let startDay = DateComponents(year: start.year, month: start.month, day: start.day)
        let earliestHour = calendar.component(.hour, from: date) - 2
        for _ in 0..<(366 * 8 + 2) {
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: day)
            if let year = parts.year, let month = parts.month, let dayOfMonth = parts.day, let weekday = parts.weekday,
                matchesDay(day: dayOfMonth, month: month, weekday: weekday - 1)
            {
                let sameDay = DateComponents(year: year, month: month, day: dayOfMonth) == startDay
                for hour in hours where !sameDay || hour >= earliestHour {
                    for minute in minutes {
                        let wanted = DateComponents(
                            year: year, month: month, day: dayOfMonth, hour: hour, minute: minute)
                        guard let candidate = Self.resolve(wanted, in: calendar) else { continue }
                        if candidate > date { return candidate }
                    }
                }
            }
            guard let next = calendar.date(byAdding: .day, value: 1, to: day) else { return nil }
            day = next
        }
        return nil
    }

    /// The instant of a local wall-clock time: its first occurrence when it
    /// occurs twice; when a DST jump skips it, the same distance past the jump.
    private static func resolve(_ wanted: DateComponents, in calendar: Calendar) -> Date? {
        guard let date = calendar.date(from: wanted) else { return nil }
        let zone = calendar.timeZone
        // Foundation may answer either occurrence of a repeated time; the
        // earlier one is an hour (the DST shift) before, with the same local time.
        let shift =
            zone.daylightSavingTimeOffset(for: date.addingTimeInterval(-7_200))
            - zone.daylightSavingTimeOffset(for: date)
        if shift > 0 {
            let earlier = date.addingTimeInterval(-shift)
            let local = calendar.dateComponents([.year, .month, .day, .hour, .minute], from: earlier)
            if local.hour == wanted.hour, local.minute == wanted.minute, local.day == wanted.day { return earlier }
        }
        return date
    }
}

/// When a schedule runs: a cron expression in a time zone, or a fixed interval.
public struct ScheduleTiming: Sendable, Hashable {
    /// The cron expression, or nil for an interval.
    public var cron: CronExpression?
    /// The zone the cron expression's times are in.
    public var timeZone: TimeZone
    /// Seconds between runs of an interval schedule.
    public var every: Double?

    /// Intervals allowed: 1 second to 366 days.
    public static let intervals = 1.0...(366 * 86_400.0)

    /// A cron schedule.
    public init(cron: CronExpression, timeZone: TimeZone) {
        self.cron = cron
        self.timeZone = timeZone
        self.every = nil
    }

    /// An interval schedule; `seconds` must be within ``intervals``.
    public init(every seconds: Double) {
        self.cron = nil
        self.timeZone = TimeZone(identifier: "UTC") ?? .current
        self.every = seconds.bounded(to: Self.intervals)
    }

    /// The first run after `date`, or nil when the cron expression never matches again.
    public func nextRun(after date: Date) -> Date? {
        if let cron { return cron.nextDate(after: date, in: timeZone) }
        return date.addingTimeInterval(every ?? Self.intervals.lowerBound)
    }

    /// Parses an interval: a number with a unit, `s`, `m`, `h` or `d`
    /// (`30s`, `5m`, `1.5h`), within ``intervals``. Nil when it is not one.
    public static func interval(_ text: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400]
        guard let unit = text.last, let scale = units[unit], let number = Double(text.dropLast()), number.isFinite
        else { return nil }
        let seconds = number * scale
        return intervals.contains(seconds) ? seconds : nil
    }
}
