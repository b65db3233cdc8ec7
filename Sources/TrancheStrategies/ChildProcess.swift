import Foundation
import Synchronization
import TrancheCore

#if canImport(Glibc)
    import Glibc
#endif

/// A child process walled off from the server: a clean environment (the
/// caller builds it), its own process group, the default signal mask and
/// dispositions, and no descriptor of ours besides its 0, 1 and 2.
///
/// Stdin is an unlinked temporary file; stdout and stderr are pipes read as
/// they fill (`PipeReader`), keeping the head of stdout and the tail of stderr in memory up
/// to their caps and discarding the rest, so neither reaches the disk nor
/// blocks the child. When the child exits, whatever it left running in its
/// group is killed; canceling the task sends the group SIGTERM, then SIGKILL
/// after `grace`.
enum ChildProcess {
    enum Termination: Sendable, Equatable {
        case exit(Int32)
        case signal(Int32)
        case launchFailed(String)
    }

    struct Result: Sendable {
        var termination: Termination
        var stdout: Data
        var stderrTail: Data
    }

    static func run(
        executable: String, arguments: [String], environment: [String: String], stdin: Data, maxStdout: Int,
        maxStderr: Int, grace: Duration
    ) async throws -> Result {
        let input = try ScratchFile()
        defer { input.close() }
        try input.write(stdin)
        let output = try CappedPipe(keeping: .head(maxStdout))
        let errors = try CappedPipe(keeping: .tail(maxStderr))
        let spawned = spawn(
            executable: executable, arguments: [executable] + arguments, environment: environment,
            descriptors: [input.handle.fileDescriptor, output.writeEnd, errors.writeEnd])
        let reader = PipeReader([output, errors])
        guard case .started(let pid) = spawned else {
            await reader.finish()
            let reason = if case .failed(let code) = spawned { String(cString: strerror(code)) } else { "" }
            return Result(
                termination: .launchFailed("\(executable): \(reason)"), stdout: Data(), stderrTail: Data())
        }
        let exited = OneShotEvent()
        // Waits without reaping (WNOWAIT): until the child is reaped its pid
        // cannot be reused, so killing its group stays safe.
        Thread.detachNewThread {
            var info = siginfo_t()
            while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) == -1 && errno == EINTR {}
            exited.fire()
        }
        await exited.wait()
        // The rest runs outside this task so a cancellation cannot cut it short.
        let result = await Task.detached {
            if !exited.hasFired {
                kill(-pid, SIGTERM)
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await exited.wait() }
                    group.addTask { try? await Task.sleep(for: grace) }
                    await group.next()
                    group.cancelAll()
                }
                kill(-pid, SIGKILL)
                await exited.wait()
            }
            kill(-pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            let termination: Termination =
                status & 0x7f == 0 ? .exit((status >> 8) & 0xff) : .signal(status & 0x7f)
            await reader.finish()
            return Result(termination: termination, stdout: output.data, stderrTail: errors.data)
        }.value
        try Task.checkCancellation()
        return result
    }

    enum Spawned {
        case started(pid_t)
        case failed(Int32)
    }

    /// Starts `arguments` with `descriptors` as its 0, 1 and 2; the pid, or the errno.
    static func spawn(executable: String, arguments: [String], environment: [String: String], descriptors: [Int32])
        -> Spawned
    {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, source) in descriptors.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, source, Int32(target))
        }
        closeOtherDescriptors(&actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for pointer in argv + envp { free(pointer) } }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        return code == 0 ? .started(pid) : .failed(code)
    }

    private typealias AddCloseFrom =
        @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) ->
        Int32

    /// Closes every descriptor above 2 in the child: glibc 2.34's
    /// `posix_spawn_file_actions_addclosefrom_np` (looked up at run time: the
    /// Glibc module hides it), else one close per descriptor open now.
    private static func closeOtherDescriptors(_ actions: inout posix_spawn_file_actions_t) {
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
            if addCloseFrom(&actions, 3) == 0 { return }
        }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for descriptor in open.compactMap({ Int32($0) }) where descriptor > 2 {
            posix_spawn_file_actions_addclose(&actions, descriptor)
        }
    }
}

/// A pipe from a child's stdout or stderr: it keeps the first or the last
/// `limit` bytes of what is read and drops the rest.
final class CappedPipe: Sendable {
    enum Keep {
        case head(Int)
        case tail(Int)
    }

    enum ReadOutcome { case read, waiting, end }

    let writeEnd: Int32
    let readEnd: Int32
    private let keep: Keep
    private let kept = Mutex(Data())

    init(keeping keep: Keep) throws {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else {
            throw ItemError.retryable("exec_failed", "cannot create a pipe: \(String(cString: strerror(errno)))")
        }
        (readEnd, writeEnd, self.keep) = (ends[0], ends[1], keep)
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK)
    }

    /// What was kept.
    var data: Data { kept.withLock { $0 } }

    /// Reads one buffer (the read end does not block).
    func readOnce() -> ReadOutcome {
        withUnsafeTemporaryAllocation(byteCount: 16_384, alignment: 1) { buffer in
            let count = read(readEnd, buffer.baseAddress, buffer.count)
            if count < 0 { return errno == EINTR ? .read : errno == EAGAIN ? .waiting : .end }
            guard count > 0 else { return .end }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<count])
            kept.withLock { data in
                switch keep {
                case .head(let limit):
                    data.append(contentsOf: chunk.prefix(max(0, limit - data.count)))
                case .tail(let limit):
                    data.append(contentsOf: chunk.suffix(limit))
                    if data.count > limit { data.removeFirst(data.count - limit) }
                }
            }
            return .read
        }
    }
}

/// Drains a child's pipes on a thread of its own as they fill, so the child
/// never blocks on a full pipe, until both end or `finish()` is called;
/// then reads what is left, closes them and returns.
final class PipeReader: Sendable {
    private let stopping = OneShotEvent()
    private let done = OneShotEvent()

    /// Closes our copies of the write ends (the child has its own) and starts reading.
    init(_ pipes: [CappedPipe]) {
        for pipe in pipes { close(pipe.writeEnd) }
        Thread.detachNewThread { [stopping, done] in
            var open = pipes
            while !open.isEmpty {
                let stop = stopping.hasFired
                var descriptors = open.map { pollfd(fd: $0.readEnd, events: Int16(POLLIN), revents: 0) }
                _ = poll(&descriptors, nfds_t(descriptors.count), stop ? 0 : 50)
                var ended: [Int32] = []
                for (pipe, polled) in zip(open, descriptors) where stop || polled.revents != 0 {
                    var outcome = CappedPipe.ReadOutcome.read
                    repeat { outcome = pipe.readOnce() } while outcome == .read && (stop || polled.revents != 0)
                    if outcome == .end || stop { ended.append(pipe.readEnd) }
                }
                for descriptor in ended { close(descriptor) }
                open.removeAll { ended.contains($0.readEnd) }
            }
            done.fire()
        }
    }

    /// Reads what is buffered, stops, and returns once the pipes are closed.
    func finish() async {
        stopping.fire()
        await done.wait()
    }
}

/// A temporary file with no name: unlinked as soon as it is created, gone
/// when its descriptor closes.
final class ScratchFile {
    let handle: FileHandle

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/tranche-exec-XXXXXX").utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { throw ItemError.retryable("exec_failed", "cannot create a temporary file") }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }

    func close() {
        try? handle.close()
    }

    func write(_ data: Data) throws {
        try handle.write(contentsOf: data)
        try handle.seek(toOffset: 0)
    }
}
