import ArgumentParser
import Foundation
import NIOCore
import TrancheCore
import TrancheEngine
import TrancheStore

#if canImport(Glibc)
    import Glibc
#endif

/// A usage or infrastructure error, printed as one line.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// The one-line reason a command ended, fit for a person: the message of
/// Tranche's own errors, the system's words for an I/O error (no errno
/// number, no function name), the localized text of a Foundation error.
func userMessage(for error: any Error) -> String {
    switch error {
    case let error as CLIError: return error.message
    case let error as EngineError: return error.message
    case let error as StoreError: return error.message
    case let error as OptionsError: return error.message
    case let error as IOError: return systemReason(error.errnoCode)
    case let error as CocoaError: return error.localizedDescription
    default: return "\(error)"
    }
}

/// The system's text for an errno value, lowercased: "connection refused".
func systemReason(_ code: Int32) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
}

/// The command line's options checked against the command they name.
///
/// ArgumentParser reports a missing required option before an unknown one,
/// so `tranche run --inpt x` would say that `--input` is missing. After a
/// parse fails, ``message(for:)`` finds an option the chosen command does
/// not know and reports that instead, as ArgumentParser words it.
enum UnknownOptions {
    /// ArgumentParser's description of a command (`--experimental-dump-help`).
    struct Command: Decodable {
        var arguments: [Argument]?
    }

    struct Argument: Decodable {
        var kind: String
        var names: [Name]?
    }

    struct Name: Decodable {
        var kind: String
        var name: String
    }

    struct Description: Decodable {
        var command: Command
    }

    /// The error text for the first unknown option of `arguments` (without
    /// the program's name), with the command's usage; nil when every option
    /// is known.
    static func message(for arguments: [String]) -> String? {
        var command: any ParsableCommand.Type = Tranche.self
        var rest = arguments[...]
        while let word = rest.first,
            let next = command.configuration.subcommands.first(where: { $0._commandName == word })
        {
            command = next
            rest = rest.dropFirst()
        }
        guard let unknown = firstUnknown(in: Array(rest), of: command) else { return nil }
        let path = ([Tranche._commandName] + arguments[..<(arguments.count - rest.count)]).joined(separator: " ")
        var text = "Error: Unknown option '\(unknown)'"
        if let suggestion = suggestion(for: unknown, of: command) { text += ". Did you mean '\(suggestion)'?" }
        return text + "\nUsage: \(Tranche.usageString(for: command))\n  See '\(path) --help' for more information."
    }

    /// The names a command accepts: long ones (`input`) and short ones
    /// (`i`), each with whether it takes a value.
    static func names(of command: any ParsableCommand.Type) -> (long: [String: Bool], short: [Character: Bool]) {
        var long = ["help": false, "version": false, "experimental-dump-help": false]
        var short: [Character: Bool] = ["h": false]
        let arguments =
            (try? JSONDecoder().decode(Description.self, from: Data(command._dumpHelp().utf8)))?.command.arguments ?? []
        for argument in arguments {
            let takesValue = argument.kind == "option"
            for name in argument.names ?? [] {
                if name.kind == "short", let character = name.name.first {
                    short[character] = takesValue
                } else {
                    long[name.name] = takesValue
                }
            }
        }
        return (long, short)
    }

    /// The first option that `command` does not know, as written (`--inpt`,
    /// `-z`); values of known options are skipped, and nothing after `--`.
    static func firstUnknown(in arguments: [String], of command: any ParsableCommand.Type) -> String? {
        let (long, short) = names(of: command)
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            if argument == "--" { return nil }
            if argument.hasPrefix("--") {
                let name = String(argument.dropFirst(2).prefix { $0 != "=" })
                guard let takesValue = long[name] else { return "--" + name }
                if takesValue, !argument.contains("=") { index += 1 }
            } else if argument.hasPrefix("-"), argument.count > 1 {
                // A single dash: short names, possibly grouped (`-qi FILE`).
                for character in argument.dropFirst() {
                    guard let takesValue = short[character] else { return "-\(character)" }
                    if takesValue {
                        if character == argument.last { index += 1 }
                        break
                    }
                }
            }
        }
        return nil
    }

    /// ArgumentParser's suggestion: the closest long name, fewer than 4 edits away.
    static func suggestion(for unknown: String, of command: any ParsableCommand.Type) -> String? {
        guard unknown.hasPrefix("--") else { return nil }
        let candidates = names(of: command).long.keys.map { "--" + $0 }
        let scored = candidates.map { ($0, editDistance($0, unknown)) }.filter { $0.1 < 4 }
        return scored.min { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }?.0
    }

    /// Levenshtein distance.
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var current = [i + 1]
            for (j, y) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// Checks a number of seconds from a flag: finite and within `range`,
/// or a validation error that names the flag and the range.
func requireSeconds(_ value: Double, in range: ClosedRange<Double>, flag: String) throws {
    guard value.isFinite, range.contains(value) else {
        throw ValidationError(
            "\(flag) must be between \(numberText(range.lowerBound)) and \(numberText(range.upperBound)) seconds, "
                + "got \(numberText(value))")
    }
}

/// Checks a whole number from a flag: within `range`, or a validation error
/// that names the flag and the range.
func requireNumber(_ value: Int, in range: ClosedRange<Int>, flag: String) throws {
    guard range.contains(value) else {
        throw ValidationError("\(flag) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
    }
}

/// A number for a message: whole numbers without a fraction, others as
/// Swift prints them (`1e+300`, `nan`).
func numberText(_ value: Double) -> String {
    value.isFinite && abs(value) < 1e15 && value == value.rounded() ? String(Int64(value)) : "\(value)"
}

/// The `--context` of `run` and `submit`: a JSON object, or an error that
/// says where the JSON broke (its byte offset) or what it is instead.
func parseContext(_ text: String) throws -> [String: JSONValue] {
    let value: JSONValue
    do {
        value = try JSONText(validating: text).value()
    } catch let error as JSONSyntaxError {
        throw CLIError("--context is not valid JSON at byte \(error.offset): \(error.reason)")
    } catch {
        throw CLIError("--context is not valid JSON: \(error.localizedDescription)")
    }
    switch value {
    case .object(let fields): return fields
    case .array: throw CLIError("--context must be a JSON object, got an array")
    case .string: throw CLIError("--context must be a JSON object, got a string")
    case .number: throw CLIError("--context must be a JSON object, got a number")
    case .bool: throw CLIError("--context must be a JSON object, got a boolean")
    case .null: throw CLIError("--context must be a JSON object, got null")
    }
}

/// A type whose values a flag names from a fixed list (a status, a policy).
protocol NamedChoices: Sendable {
    init?(choiceName: String)
    static var choiceNames: [String] { get }
    var choiceName: String { get }
}

/// A flag's value from a fixed list: ArgumentParser lists the names in the
/// help and refuses any other with them ("Please provide one of …").
struct Choice<Value: NamedChoices>: ExpressibleByArgument, Sendable {
    var value: Value

    init?(argument: String) {
        guard let value = Value(choiceName: argument) else { return nil }
        self.value = value
    }

    static var allValueStrings: [String] { Value.choiceNames }

    var defaultValueDescription: String { value.choiceName }
}
