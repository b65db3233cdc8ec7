import Foundation
import TrancheCore

#if canImport(Glibc)
    import Glibc
#endif

/// Reads an input file (or stdin) as lines, a block at a time, on a
/// dispatch thread so that a slow pipe never blocks Swift's cooperative
/// threads. Tracks the byte offset after every line for checkpoints.
final class InputReader {
    let descriptor: Int32
    let ownsDescriptor: Bool
    private var buffer: [UInt8] = []
    private var start = 0
    private var atEOF = false
    /// Bytes of the input consumed as complete lines.
    private(set) var offset: Int64
    /// Lines consumed (1-based number of the last line returned).
    private(set) var lineNumber: Int64

    static let blockSize = 1 << 20

    init(path: String, offset: Int64, lineNumber: Int64) throws {
        if path == "-" {
            descriptor = STDIN_FILENO
            ownsDescriptor = false
        } else {
            descriptor = open(path, O_RDONLY)
            guard descriptor >= 0 else { throw CLIError("cannot open input \(path): \(systemReason(errno))") }
            var info = stat()
            if fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFDIR {
                close(descriptor)
                throw CLIError("cannot read input \(path): it is a directory")
            }
            ownsDescriptor = true
        }
        self.offset = 0
        self.lineNumber = 0
        if offset > 0 {
            if path != "-", lseek(descriptor, off_t(offset), SEEK_SET) == off_t(offset) {
                self.offset = offset
            } else {
                try skip(bytes: offset)
            }
        }
        self.lineNumber = lineNumber
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// Discards `bytes` bytes (a pipe cannot seek).
    private func skip(bytes: Int64) throws {
        var remaining = bytes
        var scratch = [UInt8](repeating: 0, count: 1 << 16)
        while remaining > 0 {
            let count = scratch.withUnsafeMutableBytes {
                read(descriptor, $0.baseAddress, min(Int(remaining), 1 << 16))
            }
            guard count > 0 else {
                throw CLIError("the input ended before the checkpoint at byte \(bytes); it changed")
            }
            remaining -= Int64(count)
        }
        offset = bytes
    }

    /// Reads more bytes into the buffer; false at end of input.
    private func fill() async throws -> Bool {
        if atEOF { return false }
        let fd = descriptor
        let block: [UInt8] = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                var data = [UInt8](repeating: 0, count: InputReader.blockSize)
                let count = data.withUnsafeMutableBytes { read(fd, $0.baseAddress, InputReader.blockSize) }
                if count < 0 {
                    continuation.resume(
                        throwing: CLIError("reading the input failed: \(systemReason(errno))"))
                } else {
                    data.removeSubrange(count...)
                    continuation.resume(returning: data)
                }
            }
        }
        if block.isEmpty {
            atEOF = true
            return false
        }
        if start > 0 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        buffer.append(contentsOf: block)
        return true
    }

    /// Calls `body` with each complete line available now (after at most
    /// one read), without its newline. Returns false at end of input.
    func nextLines(_ body: (UnsafeBufferPointer<UInt8>, Int64) throws -> Void) async throws -> Bool {
        let more = try await fill()
        try buffer.withUnsafeBufferPointer { all in
            var index = start
            while let newline = all[index...].firstIndex(of: 0x0A) {
                var end = newline
                if end > index, all[end - 1] == 0x0D { end -= 1 }
                lineNumber += 1
                offset += Int64(newline + 1 - index)
                try body(UnsafeBufferPointer(rebasing: all[index..<end]), lineNumber)
                index = newline + 1
            }
            if !more, index < all.count {
                // The last line has no newline.
                lineNumber += 1
                offset += Int64(all.count - index)
                try body(UnsafeBufferPointer(rebasing: all[index..<all.count]), lineNumber)
                index = all.count
            }
            start = index
        }
        return more
    }
}

/// The input's identity at a checkpoint, to notice an input that changed.
struct InputFingerprint: Codable, Equatable {
    /// FNV-1a of the first `headLength` bytes.
    var head: UInt64
    var headLength: Int64
    /// FNV-1a of the bytes just before the checkpoint.
    var tail: UInt64
    var tailLength: Int64

    static let sample: Int64 = 64 << 10

    /// Fingerprints the file at `path` up to `offset`; nil for stdin.
    static func of(path: String, upTo offset: Int64) -> InputFingerprint? {
        guard path != "-", offset >= 0, let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        let headLength = min(sample, offset)
        let head = (try? handle.read(upToCount: Int(headLength))) ?? Data()
        let tailStart = max(0, offset - sample)
        try? handle.seek(toOffset: UInt64(tailStart))
        let tail = (try? handle.read(upToCount: Int(offset - tailStart))) ?? Data()
        return InputFingerprint(
            head: fnv1a(head), headLength: Int64(head.count), tail: fnv1a(tail), tailLength: Int64(tail.count))
    }

    static func fnv1a(_ data: some Sequence<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in data {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        return hash
    }
}

/// Where `tranche run` is in its input: saved with every append.
struct RunCursor: Codable {
    var offset: Int64
    var line: Int64
    var done: Bool
    var fingerprint: InputFingerprint?
}

/// Writes `bytes` as a JSON string literal.
func jsonQuoted(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
    var out = [UInt8]()
    out.reserveCapacity(bytes.count + 2)
    out.append(0x22)
    let hex: [UInt8] = Array("0123456789abcdef".utf8)
    for byte in bytes {
        switch byte {
        case 0x22: out += [0x5C, 0x22]
        case 0x5C: out += [0x5C, 0x5C]
        case 0x0A: out += [0x5C, UInt8(ascii: "n")]
        case 0x0D: out += [0x5C, UInt8(ascii: "r")]
        case 0x09: out += [0x5C, UInt8(ascii: "t")]
        case 0x00..<0x20: out += [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
        default: out.append(byte)
        }
    }
    out.append(0x22)
    return String(decoding: out, as: UTF8.self)
}
