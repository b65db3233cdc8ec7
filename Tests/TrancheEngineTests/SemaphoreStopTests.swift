import Testing
import TrancheCore
import TrancheTestSupport

/// An item waiting for a permit leaves when its chunk stops, without a
/// permit and without taking one that is released later.
@Suite("Waiting for a permit until a stop")
struct SemaphoreStopTests {
    @Test("a waiter leaves without a permit when the stop fires; the permit goes to the next waiter")
    func stopWhileWaiting() async throws {
        let semaphore = AsyncSemaphore(permits: 1)
        let stop = OneShotEvent()
        #expect(await semaphore.acquire(unless: stop))
        let stopped = Task { await semaphore.acquire(unless: stop) }
        try await waitUntil("the second acquire to wait") { semaphore.waiting == 1 }
        let other = Task { await semaphore.acquire() }
        try await waitUntil("the third acquire to wait") { semaphore.waiting == 2 }
        stop.fire()
        #expect(await stopped.value == false)
        #expect(semaphore.waiting == 1)
        semaphore.release()
        #expect(await other.value)
        #expect(semaphore.available == 0)
    }

    @Test("a stop that fired before: no permit, nothing queued; a free permit is still taken")
    func stoppedBefore() async throws {
        let semaphore = AsyncSemaphore(permits: 1)
        let stop = OneShotEvent()
        stop.fire()
        // A free permit is granted whatever the stop: the caller checks it.
        #expect(await semaphore.acquire(unless: stop))
        #expect(await semaphore.acquire(unless: stop) == false)
        #expect(semaphore.waiting == 0)
        semaphore.release()
        #expect(semaphore.available == 1)
    }

    @Test("a permit granted before the stop is kept; the stop takes nothing back")
    func grantedThenStopped() async throws {
        let semaphore = AsyncSemaphore(permits: 1)
        let stop = OneShotEvent()
        #expect(await semaphore.acquire())
        let waiter = Task { await semaphore.acquire(unless: stop) }
        try await waitUntil("the acquire to wait") { semaphore.waiting == 1 }
        semaphore.release()
        #expect(await waiter.value)
        stop.fire()
        #expect(semaphore.available == 0)
        #expect(semaphore.waiting == 0)
    }

    @Test("a canceled waiter leaves without a permit")
    func canceled() async throws {
        let semaphore = AsyncSemaphore(permits: 0)
        let stop = OneShotEvent()
        let waiter = Task { await semaphore.acquire(unless: stop) }
        try await waitUntil("the acquire to wait") { semaphore.waiting == 1 }
        waiter.cancel()
        #expect(await waiter.value == false)
        #expect(semaphore.waiting == 0)
        semaphore.release()
        #expect(semaphore.available == 1)
    }
}
