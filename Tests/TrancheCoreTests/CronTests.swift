import Foundation
import Testing
import TrancheCore

@Suite("Cron expressions")
struct CronTests {
    let utc = TimeZone(identifier: "UTC")!
    let paris = TimeZone(identifier: "Europe/Paris")!

    /// A UTC instant from its ISO 8601 text.
    func at(_ text: String) throws -> Date {
        try #require(ISO8601DateFormatter().date(from: text), "\(text) is a date")
    }

    func next(_ expression: String, after text: String, in zone: TimeZone? = nil) throws -> String? {
        let date = try CronExpression(expression).nextDate(after: try at(text), in: zone ?? utc)
        return date.map { ISO8601DateFormatter().string(from: $0) }
    }

    @Test("steps, ranges and lists")
    func steps() throws {
        #expect(try next("*/15 * * * *", after: "2026-05-04T10:07:00Z") == "2026-05-04T10:15:00Z")
        #expect(try next("*/15 * * * *", after: "2026-05-04T10:45:00Z") == "2026-05-04T11:00:00Z")
        #expect(try CronExpression("0-30/10 * * * *").minutes == [0, 10, 20, 30])
        #expect(try CronExpression("5/20 * * * *").minutes == [5, 25, 45])
        #expect(try CronExpression("1,2,40-42 * * * *").minutes == [1, 2, 40, 41, 42])
        #expect(try CronExpression("0 */6 * * *").hours == [0, 6, 12, 18])
        // Strictly after: a time that matches is not its own next run.
        #expect(try next("0 3 * * *", after: "2026-05-04T03:00:00Z") == "2026-05-05T03:00:00Z")
        #expect(try next("@hourly", after: "2026-05-04T03:00:00Z") == "2026-05-04T04:00:00Z")
        #expect(try next("@daily", after: "2026-12-31T23:59:00Z") == "2027-01-01T00:00:00Z")
    }

    @Test("month and day-of-week names, Sunday as 0 or 7")
    func names() throws {
        // 2026-05-09 is a Saturday: the next weekday morning is Monday the 11th.
        #expect(try next("0 9 * * MON-FRI", after: "2026-05-09T12:00:00Z") == "2026-05-11T09:00:00Z")
        #expect(try next("0 9 * * 7", after: "2026-05-09T12:00:00Z") == "2026-05-10T09:00:00Z")
        #expect(try next("0 9 * * sun", after: "2026-05-09T12:00:00Z") == "2026-05-10T09:00:00Z")
        #expect(try next("0 0 1 jan,JUL *", after: "2026-02-01T00:00:00Z") == "2026-07-01T00:00:00Z")
        #expect(try CronExpression("0 0 * * 5-7").daysOfWeek == [5, 6, 0])
    }

    @Test("day of month and day of week: either matches when both are restricted")
    func dayRules() throws {
        // The 13th, or any Friday: after Monday 2026-05-04 the first is Friday the 8th.
        #expect(try next("0 0 13 * FRI", after: "2026-05-04T00:00:00Z") == "2026-05-08T00:00:00Z")
        // Only the day of month when the weekday field is `*`.
        #expect(try next("0 0 13 * *", after: "2026-05-04T00:00:00Z") == "2026-05-13T00:00:00Z")
        // A restricted day of month with a starred weekday step still counts as unrestricted weekday.
        #expect(try next("0 0 13 * */1", after: "2026-05-04T00:00:00Z") == "2026-05-13T00:00:00Z")
        // February 29th: the next leap year.
        #expect(try next("0 0 29 2 *", after: "2026-03-01T00:00:00Z") == "2028-02-29T00:00:00Z")
        // A day that never comes.
        #expect(try next("0 0 30 2 *", after: "2026-03-01T00:00:00Z") == nil)
        // The 31st skips the months without one.
        #expect(try next("0 0 31 * *", after: "2026-04-01T00:00:00Z") == "2026-05-31T00:00:00Z")
    }

    @Test("times in a zone across daylight-saving changes")
    func daylightSaving() throws {
        // Paris: CET (UTC+1) until 2026-03-29 02:00, then CEST (UTC+2) until 2026-10-25 03:00.
        #expect(try next("0 3 * * *", after: "2026-03-28T12:00:00Z", in: paris) == "2026-03-29T01:00:00Z")
        #expect(try next("0 3 * * *", after: "2026-03-27T12:00:00Z", in: paris) == "2026-03-28T02:00:00Z")
        // 02:30 does not exist on 2026-03-29: it runs at 03:30 CEST, the same distance past the jump.
        #expect(try next("30 2 * * *", after: "2026-03-28T23:00:00Z", in: paris) == "2026-03-29T01:30:00Z")
        // Asked between the jump and the shifted time (03:10 CEST), 03:30 is still to come.
        #expect(try next("30 2 * * *", after: "2026-03-29T01:10:00Z", in: paris) == "2026-03-29T01:30:00Z")
        // 02:30 happens twice on 2026-10-25: it runs once, at the first (CEST) one.
        #expect(try next("30 2 * * *", after: "2026-10-24T22:00:00Z", in: paris) == "2026-10-25T00:30:00Z")
        #expect(try next("30 2 * * *", after: "2026-10-25T00:30:00Z", in: paris) == "2026-10-26T01:30:00Z")
        // Hourly through the repeated hour: 02:00 runs once, then 03:00 CET.
        #expect(try next("0 * * * *", after: "2026-10-24T23:30:00Z", in: paris) == "2026-10-25T00:00:00Z")
        #expect(try next("0 * * * *", after: "2026-10-25T00:00:00Z", in: paris) == "2026-10-25T02:00:00Z")
        // New York's spring change (2026-03-08, 02:00 EST -> 03:00 EDT).
        let newYork = try #require(TimeZone(identifier: "America/New_York"))
        #expect(try next("0 9 * * *", after: "2026-03-07T15:00:00Z", in: newYork) == "2026-03-08T13:00:00Z")
    }

    @Test("bad expressions are refused, naming the field")
    func errors() {
        func message(_ text: String) -> String? {
            do {
                _ = try CronExpression(text)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(message("61 * * * *") == "minute: 61 is outside 0-59")
        #expect(message("* 24 * * *") == "hour: 24 is outside 0-23")
        #expect(message("* * 0 * *") == "day of month: 0 is outside 1-31")
        #expect(message("* * * 13 *") == "month: 13 is outside 1-12")
        #expect(message("* * * * 8") == "day of week: 8 is outside 0-7")
        #expect(message("* * * *")?.hasPrefix("expected 5 fields") == true)
        #expect(message("* * * * * *")?.hasPrefix("expected 5 fields") == true)
        #expect(message("*/0 * * * *") == "minute: step '0' must be 1 to 59")
        #expect(message("30-10 * * * *") == "minute: range 30-10 runs backwards")
        #expect(message("1,,2 * * * *") == "minute: an empty list element")
        #expect(message("* * * FOO *") == "month: 'FOO' is not a value")
        #expect(message("1/2/3 * * * *") == "minute: '1/2/3' has more than one step")
        #expect(message("-1 * * * *") != nil)
        #expect(message("99999999999999999999 * * * *") != nil)
    }

    @Test("intervals: a number and a unit, 1 s to 366 days")
    func intervals() {
        #expect(ScheduleTiming.interval("30s") == 30)
        #expect(ScheduleTiming.interval("5m") == 300)
        #expect(ScheduleTiming.interval("1.5h") == 5_400)
        #expect(ScheduleTiming.interval("1d") == 86_400)
        #expect(ScheduleTiming.interval("1s") == 1)
        #expect(ScheduleTiming.interval("0.5s") == nil)
        #expect(ScheduleTiming.interval("367d") == nil)
        #expect(ScheduleTiming.interval("30") == nil)
        #expect(ScheduleTiming.interval("nans") == nil)
        #expect(ScheduleTiming.interval("infs") == nil)
        #expect(ScheduleTiming.interval("") == nil)
        let every = ScheduleTiming(every: 30)
        let start = Date(timeIntervalSince1970: 1_000)
        #expect(every.nextRun(after: start) == start.addingTimeInterval(30))
    }
}
